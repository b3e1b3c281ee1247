r"""A tiny Transformer encoder that classifies a token sequence: the "large model" side of the material's §2.4.

.. math::

    x_0 = \sqrt{C}\, E[\text{ids}] + PE, \qquad
    h = \text{Encoder}_N \circ \dots \circ \text{Encoder}_1 (x_0), \qquad
    \bar h = \frac{\sum_t m_t\, \tilde h_t}{\sum_t m_t}, \qquad
    z = \bar h\, W + b

- ``E`` (V, C) are the token embeddings, ``PE`` the sinusoidal positions (``reference/ops/positional.py``): the only
  place where the order of the words enters. Without them (``positional=False``), self-attention and the mean
  are permutation invariant and the model sees a bag of words, like logistic regression.
- The encoder layers are ``reference/models/layers.py``'s (self-attention and FFN, each with Add & Norm). Padding
  (mask :math:`m_t` = False) is hidden from every attention and left out of the mean. Pre-LN stacks
  (``norm="pre"``, the default) end with one more LayerNorm :math:`\tilde h = \operatorname{LN}_f(h)`; post-LN
  stacks use :math:`\tilde h = h`.
- The head is one linear layer from the pooled vector to the K class logits; the loss is cross-entropy
  (``reference/ops/cross_entropy.py``).

Parameters (nested dicts, gradients with the same nesting)::

    {"wte": (V, C), "blocks": [encoder layer params] * N, "ln_f": {gamma, beta} (pre-LN only),
     "head": {"W": (C, K), "b": (K,)}}

Initialisation as ``reference/models/transformer.py``: Xavier-uniform weights, zero biases, LayerNorm (1, 0), embeddings
normal with std :math:`C^{-1/2}`; the head starts at zero, so every class starts at probability 1/K.
"""
import copy
import dataclasses
import math

import numpy as np

from reference._checks import FLOAT_DTYPES, check_choice, check_float, check_ids, check_int, check_shape
from reference.models import layers
from reference.ops import activations, cross_entropy, embedding, layernorm, linear, positional
from reference.training import init, optim


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    """Sizes of the classifier.

    Attributes
    ----------
    vocab_size : int
        V (id 0 is usually padding, but any id may be masked out).
    n_classes : int
        K >= 2.
    max_len : int
        The longest sequence T it accepts.
    d_model, n_head, n_layer, d_ff : int
        C, H (divides C), N, and the FFN's hidden width.
    norm : {"pre", "post"}
    activation : {"relu", "gelu", "gelu_tanh"}
    ln_eps : float
    positional : bool
        Add the sinusoidal positions (default). Without them the model is blind to word order: permuting the
        real tokens of a sequence leaves its logits unchanged (chapter 5's exercise 1).
    """

    vocab_size: int
    n_classes: int
    max_len: int
    d_model: int = 32
    n_head: int = 2
    n_layer: int = 2
    d_ff: int = 64
    norm: str = "pre"
    activation: str = "relu"
    ln_eps: float = 1e-5
    positional: bool = True

    def __post_init__(self):
        for name in ("vocab_size", "max_len", "d_model", "n_head", "n_layer", "d_ff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"ClassifierConfig.{name}: expected a positive integer, got {value!r}")
        if isinstance(self.n_classes, bool) or not isinstance(self.n_classes, (int, np.integer)) \
                or self.n_classes < 2:
            raise ValueError(f"ClassifierConfig.n_classes: expected an integer >= 2, got {self.n_classes!r}")
        if self.d_model % self.n_head:
            raise ValueError(f"ClassifierConfig: d_model = {self.d_model} is not divisible by n_head = "
                             f"{self.n_head}")
        if self.norm not in layers.NORMS:
            raise ValueError(f"ClassifierConfig.norm: expected one of {layers.NORMS}, got {self.norm!r}")
        check_choice("ClassifierConfig.activation", self.activation, tuple(activations.ACTIVATIONS))


def init_params(config, rng, dtype=np.float64):
    """Fresh parameters for ``config`` (scheme in the module docstring)."""
    if not isinstance(config, ClassifierConfig):
        raise TypeError(f"config: expected a ClassifierConfig, got {type(config).__name__}")
    dtype = np.dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    C, F = config.d_model, config.d_ff

    def attn():
        p = {k: init.xavier_uniform((C, C), rng, dtype=dtype) for k in ("Wq", "Wk", "Wv", "Wo")}
        p.update({k: np.zeros(C, dtype=dtype) for k in ("bq", "bk", "bv", "bo")})
        return p

    def ln():
        return {"gamma": np.ones(C, dtype=dtype), "beta": np.zeros(C, dtype=dtype)}

    params = {
        "wte": init.normal((config.vocab_size, C), rng, std=C ** -0.5, dtype=dtype),
        "blocks": [{"attn": attn(), "ln1": ln(),
                    "ffn": {"W1": init.xavier_uniform((C, F), rng, dtype=dtype), "b1": np.zeros(F, dtype=dtype),
                            "W2": init.xavier_uniform((F, C), rng, dtype=dtype), "b2": np.zeros(C, dtype=dtype)},
                    "ln2": ln()} for _ in range(config.n_layer)],
        "head": {"W": np.zeros((C, config.n_classes), dtype=dtype), "b": np.zeros(config.n_classes, dtype=dtype)},
    }
    if config.norm == "pre":
        params["ln_f"] = ln()
    return params


def n_params(params):
    """Number of scalars in a parameter tree."""
    if isinstance(params, dict):
        return sum(n_params(v) for v in params.values())
    if isinstance(params, list):
        return sum(n_params(v) for v in params)
    return params.size


def _check_inputs(params, config, ids, mask):
    if not isinstance(config, ClassifierConfig):
        raise TypeError(f"config: expected a ClassifierConfig, got {type(config).__name__}")
    check_float("params['wte']", params["wte"])
    check_shape("params['wte']", params["wte"], (config.vocab_size, config.d_model))
    check_ids("ids", ids, config.vocab_size)
    check_shape("ids", ids, (None, None))
    B, T = ids.shape
    if T > config.max_len:
        raise ValueError(f"ids: expected at most max_len = {config.max_len} positions, got shape {ids.shape}")
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        got = mask.dtype if isinstance(mask, np.ndarray) else type(mask).__name__
        raise TypeError(f"mask: expected a boolean numpy.ndarray (True = real token), got {got}")
    check_shape("mask", mask, (B, T))
    if B and not mask.any(axis=1).all():
        raise ValueError(f"mask: every sequence needs at least one real token; rows "
                         f"{np.flatnonzero(~mask.any(axis=1)).tolist()[:5]} have none")
    if len(params["blocks"]) != config.n_layer:
        raise ValueError(f"params['blocks']: expected {config.n_layer} layers, got {len(params['blocks'])}")


def forward(params, config, ids, mask):
    """Class logits of each sequence.

    Parameters
    ----------
    params : dict from :func:`init_params`
    config : ClassifierConfig
    ids : ndarray (B, T) int, T <= max_len
    mask : ndarray (B, T) bool
        True = a real token; each row needs at least one.

    Returns
    -------
    logits : ndarray (B, K), the parameters' dtype
    cache : tuple
    """
    _check_inputs(params, config, ids, mask)
    E = params["wte"]
    T, C = ids.shape[1], config.d_model
    scale = E.dtype.type(math.sqrt(C))                                # in E's dtype: no promotion of float32
    e, c_emb = embedding.forward(ids, E)                              # (B, T, C)
    x = scale * e                                                     # (B, T, C)
    if config.positional:
        x += positional.sinusoidal(T, C, dtype=E.dtype)               # (B, T, C) + (T, C)
    key_mask = mask[:, None, None, :]                                 # (B, 1, 1, T) padding hidden from attention
    layer_caches = []
    for p in params["blocks"]:
        x, c = layers.encoder_layer_forward(x, p, config.n_head, key_mask, norm=config.norm,
                                            eps=config.ln_eps, activation=config.activation)
        layer_caches.append(c)
    c_ln = None
    if config.norm == "pre":
        x, c_ln = layernorm.forward_fast(x, params["ln_f"]["gamma"], params["ln_f"]["beta"], config.ln_eps)
    w = mask.astype(E.dtype)                                          # (B, T)
    w /= w.sum(axis=1, keepdims=True)                                 # (B, T) 1/n_real at real tokens, else 0
    pooled = np.einsum("bt,btc->bc", w, x)                            # (B, C) mean over real tokens
    logits, c_head = linear.forward_fast(pooled, params["head"]["W"], params["head"]["b"])   # (B, K)
    return logits, (c_emb, scale, layer_caches, c_ln, w, c_head)


def backward(dlogits, cache):
    """Gradients of every parameter, given the upstream gradient of the logits (B, K).

    Returns
    -------
    grads : dict with the nesting of ``params``
    """
    c_emb, scale, layer_caches, c_ln, w, c_head = cache
    check_float("dlogits", dlogits)
    grads = {}
    # forward: z = pooled W + b
    dpooled, dW, db = linear.backward_fast(dlogits, c_head)                # (B, C)
    grads["head"] = {"W": dW, "b": db}
    # forward: pooled = sum_t w_t x_t
    dx = w[:, :, None] * dpooled[:, None, :]                          # (B, T, C)
    if c_ln is not None:
        # forward: x = LN_f(h)
        dx, dgamma, dbeta = layernorm.backward_fast(dx, c_ln)
        grads["ln_f"] = {"gamma": dgamma, "beta": dbeta}
    layer_grads = []
    for c in reversed(layer_caches):
        # forward: x_l = Encoder_l(x_{l-1})
        dx, dp = layers.encoder_layer_backward(dx, c)
        layer_grads.append(dp)
    grads["blocks"] = layer_grads[::-1]
    # forward: x_0 = scale * E[ids] + PE   (PE is a constant)
    grads["wte"] = embedding.backward(scale * dx, c_emb)              # (V, C)
    return grads


def loss_and_grads(params, config, ids, mask, y):
    """Mean cross-entropy of the logits against the classes ``y`` (B,), and the gradients of every parameter."""
    logits, cache = forward(params, config, ids, mask)
    loss, c_ce = cross_entropy.forward(logits, y)
    return float(loss), backward(cross_entropy.backward(1.0, c_ce), cache)


def predict(params, config, ids, mask, batch_size=512):
    """The most probable class of each sequence, (N,) int64, computed ``batch_size`` rows at a time."""
    out = [forward(params, config, ids[i:i + batch_size], mask[i:i + batch_size])[0].argmax(axis=1)
           for i in range(0, len(ids), batch_size)]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def accuracy(params, config, ids, mask, y):
    """Share of sequences whose predicted class is ``y``."""
    return float(np.mean(predict(params, config, ids, mask) == y))


def train(params, config, ids, mask, y, rng, steps=500, batch_size=32, lr=3e-3, weight_decay=0.01,
          warmup=20, clip=1.0, dev=None, eval_every=100):
    r"""Train with AdamW on random mini-batches; keep the parameters that did best on ``dev``.

    Each step draws ``batch_size`` examples without replacement from the training set (with replacement across
    steps), computes the loss and gradients, clips the global gradient norm to ``clip``, and takes an AdamW step
    (``reference/training/optim.py``) with a linear warm-up and a cosine decay of the rate to 0 at ``steps``. Weight decay
    applies to the matrices, not to the embeddings, biases and LayerNorm parameters (``optim.decay_matrices``).

    Parameters
    ----------
    params : dict from :func:`init_params`; updated in place
    config : ClassifierConfig
    ids, mask, y : ndarray (N, T) int, (N, T) bool, (N,) int
    rng : numpy.random.Generator
        Draws the mini-batches.
    steps, batch_size, warmup : int
    lr, weight_decay, clip : float
    dev : (ids, mask, y), optional
        Scored every ``eval_every`` steps and at the end; the best-scoring parameters are returned (early stopping
        by selection: training always runs all ``steps``).
    eval_every : int

    Returns
    -------
    best : dict
        A copy of the parameters with the best dev accuracy (the final ones when ``dev`` is None).
    history : dict
        ``"loss"``: the training loss of each step; ``"dev"``: list of (step, dev accuracy).
    """
    check_int("y", y)
    check_shape("y", y, (ids.shape[0],))
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    for name, value in (("steps", steps), ("batch_size", batch_size), ("eval_every", eval_every)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    N = ids.shape[0]
    if N == 0:
        raise ValueError("ids: expected at least one training example, got 0")
    state = optim.adamw_init(params)
    history = {"loss": [], "dev": []}
    best, best_acc = copy.deepcopy(params), -1.0
    for step in range(1, steps + 1):
        idx = rng.choice(N, size=min(batch_size, N), replace=False)                # (B,)
        loss, grads = loss_and_grads(params, config, ids[idx], mask[idx], y[idx])
        if not math.isfinite(loss):
            raise FloatingPointError(f"train: the loss is {loss} at step {step}; lower lr (now {lr})")
        history["loss"].append(loss)
        optim.clip_grad_norm(grads, clip)
        optim.adamw_step(params, grads, state, optim.warmup_cosine(step, lr, min(warmup, steps), steps),
                         weight_decay=weight_decay, decay_mask=optim.decay_matrices)
        if dev is not None and (step % eval_every == 0 or step == steps):
            acc = accuracy(params, config, *dev)
            history["dev"].append((step, acc))
            if acc > best_acc:
                best, best_acc = copy.deepcopy(params), acc
    if dev is None:
        best = copy.deepcopy(params)
    return best, history
