r"""How data parallelism with ZeRO, tensor and pipeline parallelism divide a training run's memory (material §1, §5).

Arithmetic only, on the counts of ``counting.py``; ``reference/training/`` runs the techniques themselves.

**Model states.** Training with Adam keeps, per parameter, the weight, its gradient and two moments. In mixed
precision (Micikevicius et al. 2018) the weight and gradient the model computes with are 16-bit, and the optimizer
keeps a float32 **master copy** of the weight beside float32 moments: an update is often smaller than half a unit in
the last place of a 16-bit weight and would round away, so it is applied to the float32 copy. Both recipes cost the
same 16 bytes per parameter (:data:`RECIPES`); mixed precision saves activations, bandwidth and time, not state.

ZeRO (Rajbhandari et al. 2020) shards the states over the :math:`N_d` data-parallel ranks, in three stages; with
:math:`\Psi` parameters, 16-bit weights and gradients and :math:`K = 12` bytes of optimizer state (master, m, v):

=========================  =========================================================
stage 0 (plain data par.)  :math:`(2 + 2 + K)\,\Psi`
stage 1: optimizer states  :math:`2\Psi + 2\Psi + K\Psi / N_d`
stage 2: + gradients       :math:`2\Psi + (2 + K)\,\Psi / N_d`
stage 3: + weights         :math:`(2 + 2 + K)\,\Psi / N_d`
=========================  =========================================================

Tensor parallelism over t ranks and pipeline parallelism over p stages split the model itself: each device holds
about :math:`\Psi / (t p)` parameters with all their states (taken as an even split here; in practice the embedding
sits on the first stage, and tensor parallelism splits it by vocabulary). ZeRO then shards what one model-parallel
group holds over its :math:`N_d` replicas: :func:`state_bytes` combines the three.

**Activations.** What the backward pass needs, per layer, for a micro-batch of b sequences of s tokens, hidden size h
and a heads, in 16 bits with dropout (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
Transformer Models", section 4):

.. math::

    s b h \left(34 + 5 \frac{a s}{h}\right) \text{ bytes}; \quad
    \text{tensor parallel: } s b h \left(10 + \frac{24}{t} + 5 \frac{a s}{h t}\right); \quad
    \text{full recomputation: } 2 s b h .

(34 s b h: the inputs of the matmuls, LayerNorms, GELU and the dropout masks; :math:`5 a s^2 b`: the attention
scores, their softmax and its dropout mask. The NumPy model of this book has no dropout and keeps float32: its own
fitted count is in ``reference/training/memory.py``.)

**Communication per step.** A ring all-reduce of n bytes over W ranks sends :math:`2 (W-1)/W \cdot n` bytes from
each rank (``reference/training/distributed.py``; ``bench/comm.py`` measures it). Data parallelism all-reduces the
gradients once per step (:func:`dp_bytes_per_step`); ZeRO-1 and -2 replace it by a reduce-scatter and an all-gather,
the same volume; ZeRO-3 all-gathers the weights again for the backward pass, 1.5 times as much. Tensor parallelism
all-reduces activations: two in each layer's forward pass and two in its backward pass (``tensor_parallel.py``),
for every micro-batch (:func:`tp_bytes_per_layer`).
"""
import math

# Bytes per parameter of the model states, by recipe: (weights, gradients, optimizer states K).
RECIPES = {"fp32": {"weights": 4, "grads": 4, "optimizer": 8},          # fp32 weights, grads, Adam's m and v
           "mixed": {"weights": 2, "grads": 2, "optimizer": 12}}        # bf16/fp16 + fp32 master, m and v
# The ZeRO stage from which each part is sharded over the data-parallel replicas.
ZERO_STAGE = {"optimizer": 1, "grads": 2, "weights": 3}


def _check(name, value, low=1):
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")


def state_bytes(n_params, recipe="mixed", zero=0, dp=1, tp=1, pp=1):
    """Bytes of model states on one device: weights, gradients and optimizer states, and their ``total``.

    Parameters
    ----------
    n_params : the model's parameter count :math:`\\Psi`
    recipe : "mixed" (16-bit weights and gradients, float32 master, m, v) or "fp32" (:data:`RECIPES`)
    zero : ZeRO stage 0-3 over the ``dp`` data-parallel replicas
    dp, tp, pp : data-parallel replicas, tensor-parallel ranks, pipeline stages
    """
    if recipe not in RECIPES:
        raise ValueError(f"recipe: expected one of {sorted(RECIPES)}, got {recipe!r}")
    if zero not in (0, 1, 2, 3):
        raise ValueError(f"zero: expected a ZeRO stage 0, 1, 2 or 3, got {zero!r}")
    for name, v in (("dp", dp), ("tp", tp), ("pp", pp)):
        _check(name, v)
    per_device = n_params / (tp * pp)                 # the model-parallel group's share
    b = RECIPES[recipe]
    parts = {k: per_device * b[k] / (dp if zero >= ZERO_STAGE[k] else 1) for k in b}
    parts["total"] = sum(parts.values())
    return parts


def devices_needed(n_params, device_bytes, recipe="mixed", zero=0, tp=1, pp=1, reserve=0.0):
    """The fewest devices of ``device_bytes`` that hold the model states, for a scheme (activations aside).

    The model-parallel group is ``tp * pp`` devices; the count is that times the fewest data-parallel replicas
    :math:`N_d` whose ZeRO shards fit in ``device_bytes * (1 - reserve)``. Returns None when no :math:`N_d` fits
    (what ZeRO does not shard is already too large for one device).
    """
    if not device_bytes > 0 or not 0 <= reserve < 1:
        raise ValueError(f"device_bytes, reserve: expected > 0 and in [0, 1), got {device_bytes!r}, {reserve!r}")
    budget = device_bytes * (1 - reserve)
    one = state_bytes(n_params, recipe, zero, 1, tp, pp)          # one replica: nothing divided by N_d yet
    fixed = sum(one[k] for k in ZERO_STAGE if zero < ZERO_STAGE[k])   # on every device whatever N_d
    shardable = one["total"] - fixed                              # divided by N_d
    if shardable == 0:
        return tp * pp if fixed <= budget else None
    if fixed >= budget:
        return None
    return tp * pp * math.ceil(shardable / (budget - fixed))


def activation_bytes_per_layer(s, b, h, a, tp=1, recompute=False):
    """16-bit activations one Transformer layer keeps for the backward pass (Korthikanti et al. 2022, section 4):
    :math:`sbh(34 + 5as/h)`; with tensor parallelism :math:`sbh(10 + 24/t + 5as/(ht))`; with full recomputation
    :math:`2sbh` (the layer's input alone)."""
    for name, v in (("s", s), ("b", b), ("h", h), ("a", a), ("tp", tp)):
        _check(name, v)
    if recompute:
        return 2 * s * b * h
    return s * b * h * (10 + 24 / tp + 5 * a * s / (h * tp))


def ring_bytes(n_bytes, world):
    r"""Bytes each rank sends in a ring all-reduce of ``n_bytes`` over ``world`` ranks: :math:`2 (W-1)/W \cdot n`."""
    _check("world", world)
    return 2 * (world - 1) / world * n_bytes


def dp_bytes_per_step(n_params, dp, tp=1, pp=1, grad_bytes=2, zero=0):
    """Bytes each rank sends per step for the gradients of its ``n_params / (tp pp)`` parameters over ``dp``
    replicas: one all-reduce (ZeRO 0-2: a reduce-scatter and an all-gather, the same volume; ZeRO-3: 1.5 times)."""
    volume = ring_bytes(n_params / (tp * pp) * grad_bytes, dp)
    return volume * (1.5 if zero == 3 else 1.0)


def tp_bytes_per_layer(s, b, h, tp, act_bytes=2, recompute=False):
    """Bytes each rank sends per layer and micro-batch under tensor parallelism: four all-reduces of the
    (s, b, h) activations (two forward, two backward), six when the forward pass is recomputed."""
    return (6 if recompute else 4) * ring_bytes(s * b * h * act_bytes, tp)
