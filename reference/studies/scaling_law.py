r"""Small scaling experiments (material §5): a timed training run with a fixed token budget, and a power-law fit.

The material expects models to keep growing ("模型规模的扩大 ... 从而提高模型性能": larger models, better
performance) and names compute as the price ("计算资源"). Kaplan et al. (2020) measured the first claim as a power
law: with enough data, the test loss falls as :math:`L(N) \approx (N_c / N)^{\alpha_N}` in the number of
non-embedding parameters :math:`N`, a straight line on log-log axes,

.. math:: \log L = a + b \log N, \qquad b = -\alpha_N,

which :func:`fit_power_law` fits by least squares. :func:`train_run` trains one GPT of ``reference/models/gpt.py`` for a
given number of steps and times the steps, so that its token count :math:`D` and its wall time can be set against
the compute estimate :math:`C \approx 6ND` (``reference/studies/counting.py``).
"""
import math
import time

import numpy as np

from reference import train, tree
from reference.models import gpt
from reference.training import data, optim

OPTIMIZERS = ("adamw", "sgd")


def fit_power_law(n, loss):
    r"""Least-squares fit of :math:`\log L = a + b \log N`.

    Parameters
    ----------
    n : array_like (K,)
        Positive sizes (parameters), K >= 2 of them, not all equal.
    loss : array_like (K,)
        Positive losses.

    Returns
    -------
    a, b : float
        Intercept and slope in natural logs: :math:`L \approx e^a N^b`.
    r2 : float
        Coefficient of determination of the fit in log space (1 = every point on the line).
    """
    n = np.asarray(n, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    if n.ndim != 1 or loss.shape != n.shape:
        raise ValueError(f"n and loss: expected two 1-D arrays of one length, got shapes {n.shape} and {loss.shape}")
    if n.size < 2 or np.ptp(n) == 0:
        raise ValueError(f"n: expected at least two different sizes to fit a line, got {n.tolist()}")
    if not (np.all(np.isfinite(n)) and np.all(n > 0) and np.all(np.isfinite(loss)) and np.all(loss > 0)):
        raise ValueError("n and loss: expected positive finite numbers (their logarithms are fitted)")
    x, y = np.log(n), np.log(loss)                                  # (K,)
    A = np.stack([np.ones_like(x), x], axis=1)                      # (K, 2)
    (a, b), *_ = np.linalg.lstsq(A, y, rcond=None)
    resid = y - (a + b * x)                                         # (K,)
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid ** 2)) / total if total > 0 else 1.0
    return float(a), float(b), r2


def power_law(n, a, b):
    """:math:`e^a N^b`, the curve of :func:`fit_power_law` (float64)."""
    return np.exp(a) * np.asarray(n, dtype=np.float64) ** b


def matmul_params(params):
    """The parameters that take part in a multiply-add for every token: the blocks and the tied output head.

    Kaplan et al. count non-embedding parameters; here the head (``wte`` used as a ``V x C`` matmul) is added
    back because for a small model with a 319-id vocabulary it is a large share of the compute. The position table
    and the lookup are not multiply-adds.
    """
    blocks = gpt.n_params({"blocks": params["blocks"]})
    return blocks + params["wte"].size


def train_run(config, train_ids, val_ids, steps, batch_size, lr, *, optimizer="adamw", warmup=0, min_lr_ratio=0.1,
              grad_clip=1.0, weight_decay=0.1, betas=(0.9, 0.95), eval_every=None, eval_batches=8, seed=0):
    r"""Train a freshly initialised GPT for ``steps`` steps on random windows of ``train_ids``; time the steps.

    Each step is the training program's (``reference/train.py``): loss and gradients, global-norm clipping (or
    none), the learning rate of ``optim.warmup_cosine`` (``min_lr_ratio=1`` keeps it constant after the warm-up),
    and an AdamW step (weight decay on matrices only) or a plain SGD step. A non-finite loss stops the run.

    Parameters
    ----------
    config : gpt.GPTConfig
    train_ids, val_ids : int ndarray (N,)
    steps, batch_size : int
        The run sees ``steps * batch_size * config.block_size`` tokens.
    lr : float
        Peak learning rate.
    optimizer : {"adamw", "sgd"}
    warmup : int
    min_lr_ratio : float in [0, 1]
    grad_clip : float or None
        Max global gradient norm; ``None`` = no clipping.
    weight_decay : float
        AdamW's decoupled weight decay (ignored by SGD).
    betas : (float, float)
    eval_every : int, optional
        Validation every this many steps and at the end; by default only at the end.
    eval_batches : int
        Validation windows per evaluation (the same windows every time).
    seed : int
        Seeds the initialisation and the batches.

    Returns
    -------
    dict
        ``train_loss`` (list of float per step), ``grad_norm`` (norm before clipping, per step), ``val`` (list of
        ``[step, loss]``), ``n_params`` (all), ``n_matmul`` (:func:`matmul_params`), ``tokens`` (seen), ``seconds``
        (wall time of the steps, evaluation excluded), ``diverged_at`` (the step whose loss was not finite, or None),
        ``params`` (the trained parameters).
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {optimizer!r}")
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip: expected a positive number or None, got {grad_clip!r}")
    rng = np.random.default_rng(seed)
    params = gpt.init_params(config, rng, dtype=np.float32)
    state = optim.adamw_init(params) if optimizer == "adamw" else optim.sgd_init(params)
    eval_run = {"seed": seed, "eval_batches": eval_batches, "batch_size": batch_size,
                "block_size": config.block_size}
    out = {"train_loss": [], "grad_norm": [], "val": [], "n_params": gpt.n_params(params),
           "n_matmul": matmul_params(params), "tokens": 0, "seconds": 0.0, "diverged_at": None}
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        x, y = data.get_batch(train_ids, batch_size, config.block_size, rng)
        loss, grads = gpt.loss_and_grads(params, config, x, y)
        loss = float(loss)
        if not math.isfinite(loss):
            out["diverged_at"] = step
            break
        if grad_clip is None:
            norm = math.sqrt(sum(float(np.vdot(g, g)) for g in tree.flatten(grads).values()))
        else:
            grads, norm = optim.clip_grad_norm(grads, grad_clip)
        rate = optim.warmup_cosine(step, lr, warmup, steps, min_lr=lr * min_lr_ratio)
        if optimizer == "adamw":
            optim.adamw_step(params, grads, state, rate, betas=tuple(betas), weight_decay=weight_decay,
                             decay_mask=optim.decay_matrices)
        else:
            optim.sgd_step(params, grads, state, rate)
        out["seconds"] += time.perf_counter() - t0
        out["tokens"] += batch_size * config.block_size
        out["train_loss"].append(loss)
        out["grad_norm"].append(norm)
        if (eval_every and step % eval_every == 0) or step == steps:
            out["val"].append([step, train.evaluate(params, config, val_ids, eval_run)])
    out["params"] = params
    return out
