r"""Knowledge distillation (material §2.2): a small student learns from a large teacher's softened predictions.

The loss (Hinton, Vinyals & Dean 2015), per position :math:`n` of :math:`N`, with temperature :math:`T > 0`,
:math:`p^t = \mathrm{softmax}(z^t / T)` (teacher), :math:`p^s = \mathrm{softmax}(z^s / T)` (student):

.. math::

    L = T^2 \cdot \frac{1}{N} \sum_n \mathrm{KL}\!\left(p^t_n \,\Vert\, p^s_n\right)
        + \alpha \cdot \frac{1}{N} \sum_n \mathrm{CE}(z^s_n, y_n),
    \qquad \mathrm{KL}(p^t \Vert p^s) = \sum_v p^t_v \left(\log p^t_v - \log p^s_v\right)

The weighting is the issue's: :math:`T^2\,\mathrm{KL} + \alpha\,\mathrm{CE}` (not :math:`(1-\alpha) T^2 \mathrm{KL}
+ \alpha\, \mathrm{CE}`; with :math:`\alpha = 0` it is pure distillation). The cross-entropy is on the *unsoftened*
student logits and the hard targets. Why :math:`T^2`: the gradient of the KL term carries a factor :math:`1/T`
(below), and the softened probabilities differ by :math:`O(1/T)` more, so without the :math:`T^2` the soft term's
gradient would shrink like :math:`1/T^2` as :math:`T` grows and its balance with the CE term would depend on
:math:`T`.

Backward (no gradient flows to the teacher: its logits are data). With :math:`u = z^s / T`,
:math:`\log p^s_v = u_v - \operatorname{lse}(u)`, so

.. math::

    \frac{\partial}{\partial z^s_{n,w}} \sum_v p^t_{n,v} \left(\log p^t_{n,v} - \log p^s_{n,v}\right)
    = -\frac{1}{T} \sum_v p^t_{n,v} \left(\delta_{vw} - p^s_{n,w}\right) = \frac{1}{T}\left(p^s_{n,w} - p^t_{n,w}\right)

using :math:`\sum_v p^t_{n,v} = 1`. Hence

.. math::

    \frac{\partial L}{\partial z^s_n} = \frac{T\,(p^s_n - p^t_n) + \alpha\,(\mathrm{softmax}(z^s_n) -
    \mathrm{onehot}(y_n))}{N}.

Stability: both log-softmaxes subtract the row maximum first (no ``exp`` of a positive number), and the KL uses
:math:`\log p^t` from the log-softmax, never :math:`\log` of a probability that underflowed to 0 (where
:math:`p^t_v = 0` the term is :math:`0 \cdot \text{finite} = 0`). Logits of magnitude 1e4 are fine in float32.

:func:`distill` trains a student GPT with this loss from a trained teacher GPT, and a baseline student of the same
shape from scratch with cross-entropy only, on the same batches from the same initialisation, and compares them.
"""
import math
import time

import numpy as np

from reference import tree
from reference._checks import check_float, check_int, check_shape
from reference.compression.prune import validation_loss
from reference.models import gpt
from reference.ops import cross_entropy
from reference.training import data, optim


def _scalar(name, value, positive):
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not (number and math.isfinite(float(value)) and (float(value) > 0 if positive else float(value) >= 0)):
        want = "a finite number > 0" if positive else "a finite number >= 0"
        raise ValueError(f"{name}: expected {want}, got {value!r}")
    return float(value)


def _log_softmax(u):
    """Row-wise log-softmax of (N, V), max subtracted first."""
    m = u.max(axis=1, keepdims=True)                                 # (N, 1)
    shifted = u - m                                                  # (N, V), every entry <= 0
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def forward(student_logits, teacher_logits, targets, T, alpha):
    r"""Distillation loss :math:`T^2 \overline{\mathrm{KL}}(p^t \Vert p^s) + \alpha\,\overline{\mathrm{CE}}(z^s, y)`.

    Parameters
    ----------
    student_logits : (..., V) float32 or float64
    teacher_logits : (..., V), same shape and dtype
    targets : int array (...), or None when ``alpha == 0``
    T : float > 0, the temperature
    alpha : float >= 0, the weight of the hard-label cross-entropy

    Returns
    -------
    loss : 0-d ndarray of the logits' dtype
    cache : for :func:`backward`
    """
    check_float("student_logits", student_logits, ndim_min=1)
    check_float("teacher_logits", teacher_logits, ndim_min=1)
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"teacher_logits: expected the shape of student_logits {student_logits.shape}, "
                         f"got {teacher_logits.shape}")
    if teacher_logits.dtype != student_logits.dtype:
        raise TypeError(f"teacher_logits: expected dtype {student_logits.dtype} (the student's), "
                        f"got {teacher_logits.dtype}")
    T = _scalar("T", T, positive=True)
    alpha = _scalar("alpha", alpha, positive=False)
    if targets is None and alpha != 0.0:
        raise ValueError(f"targets: required when alpha > 0 (alpha={alpha}); pass None only with alpha=0")
    if targets is not None:
        check_int("targets", targets)
        check_shape("targets", targets, student_logits.shape[:-1])
    dtype = student_logits.dtype
    V = student_logits.shape[-1]
    zs = student_logits.reshape(-1, V)                               # (N, V)
    zt = teacher_logits.reshape(-1, V)                               # (N, V)
    N = zs.shape[0]
    if N == 0:
        return np.zeros((), dtype=dtype), (None, None, T, alpha, 0, None, student_logits.shape, dtype)
    log_ps = _log_softmax(zs / T)                                    # (N, V) log softmax(z_s / T)
    log_pt = _log_softmax(zt / T)                                    # (N, V) log softmax(z_t / T)
    p_s = np.exp(log_ps)                                             # (N, V)
    p_t = np.exp(log_pt)                                             # (N, V)
    kl = (p_t * (log_pt - log_ps)).sum(axis=1)                       # (N,) KL(p_t || p_s) per position
    loss = (T * T) * kl.sum(dtype=dtype) / dtype.type(N)
    ce_cache = None
    if alpha != 0.0:
        ce, ce_cache = cross_entropy.forward(student_logits, targets)
        loss = loss + alpha * ce
    return np.asarray(loss, dtype=dtype), (p_s, p_t, T, alpha, N, ce_cache, student_logits.shape, dtype)


def backward(dloss, cache):
    r"""Gradient with respect to the student's logits only: :math:`(T (p^s - p^t) + \alpha (\mathrm{softmax}(z^s) -
    \mathrm{onehot}(y))) / N`, times ``dloss``.

    Parameters
    ----------
    dloss : float or 0-d float ndarray
    cache : from :func:`forward`

    Returns
    -------
    dstudent_logits : the shape and dtype of ``student_logits``
    """
    p_s, p_t, T, alpha, N, ce_cache, shape, dtype = cache
    if isinstance(dloss, np.ndarray):
        check_float("dloss", dloss)
        check_shape("dloss", dloss, ())
    elif isinstance(dloss, (bool, np.bool_)) or not isinstance(dloss, (int, float, np.integer, np.floating)):
        raise TypeError(f"dloss: expected a real number or a 0-d float ndarray, got {type(dloss).__name__}")
    if N == 0:
        return np.zeros(shape, dtype=dtype)
    scale = dtype.type(dloss) * dtype.type(T) / dtype.type(N)
    # forward: L = T^2 mean_n KL(p_t,n || p_s,n) + alpha CE;   d(T^2 KL_n)/dz_s,n = T (p_s,n - p_t,n)
    dz = (p_s - p_t) * scale                                         # (N, V)
    dz = dz.reshape(shape)                                           # (..., V)
    if alpha != 0.0:
        # forward: L += alpha * CE(z_s, y)
        dz += cross_entropy.backward(dtype.type(alpha) * dtype.type(dloss), ce_cache)
    return dz


# ---------------------------------------------------------------------------------------------------------------
# Distilling a GPT
# ---------------------------------------------------------------------------------------------------------------

def forward_tokens_per_second(params, config, batch_size=8, repeats=3, seed=0):
    """Forward-pass throughput (tokens/s) on random ids of ``(batch_size, block_size)``: the best of ``repeats``
    timed passes after one warm-up, the usual way to keep other processes' noise out of a small measurement."""
    ids = np.random.default_rng(seed).integers(0, config.vocab_size, size=(batch_size, config.block_size))
    gpt.forward(params, config, ids)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        gpt.forward(params, config, ids)
        best = min(best, time.perf_counter() - t0)
    return ids.size / best


def distill(teacher_params, teacher_config, student_config, train_data, steps, val_data=None, T=2.0, alpha=0.5,
            lr=3e-3, batch_size=8, eval_every=None, eval_batches=4, warmup=None, grad_clip=1.0, weight_decay=0.1,
            seed=0, window_stride=None):
    r"""Train a student GPT by distillation from ``teacher_params`` and a same-shaped student from scratch.

    Both students start from the same ``gpt.init_params(student_config, seed)``, see the same batches (windows of
    ``student_config.block_size`` tokens from ``train_data``) and take ``steps`` AdamW steps with the same
    warm-up + cosine schedule, weight decay on the matrices and global-norm clipping. The distilled one minimises
    :func:`forward` (``T``, ``alpha``) against the teacher's logits on the same batch; the baseline minimises the
    cross-entropy alone. The students are float32; the teacher's logits are cast to float32 for the loss.

    Parameters
    ----------
    teacher_params, teacher_config : a trained GPT
    student_config : GPTConfig with the teacher's ``vocab_size`` and a ``block_size`` at most the teacher's
        (about 4x fewer parameters: halve ``d_model`` at the same depth)
    train_data, val_data : int arrays of token ids; ``val_data`` defaults to ``train_data``
    steps : int >= 1
    T, alpha : the loss's temperature and CE weight
    lr, batch_size, warmup (default ``steps // 10``), grad_clip, weight_decay, seed : training settings
    eval_every : validation every this many steps (default ``max(1, steps // 10)``), and at step 0 and the end
    eval_batches : windows per validation (same windows every time, :func:`reference.compression.prune.validation_loss`)
    window_stride : None (windows start anywhere, ``data.get_batch``) or an int s: windows start only at multiples of
        s, so a small ``train_data`` holds a fixed set of windows that the students see again and again; the
        teacher's logits of each window are then computed once and kept (the teacher is the expensive model)

    Returns
    -------
    dict with
        ``"curves"``: ``{"distilled": [(step, val_loss)], "scratch": [...]}``;
        ``"table"``: list of ``{"model", "params", "val_loss", "tokens_per_s"}`` for teacher, distilled, scratch;
        ``"students"``: ``{"distilled": params, "scratch": params}``.
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps: expected a positive integer, got {steps!r}")
    if student_config.vocab_size != teacher_config.vocab_size:
        raise ValueError(f"student_config.vocab_size={student_config.vocab_size} differs from the teacher's "
                         f"{teacher_config.vocab_size}: the two distributions must be over the same tokens")
    if student_config.block_size > teacher_config.block_size:
        raise ValueError(f"student_config.block_size={student_config.block_size} exceeds the teacher's "
                         f"{teacher_config.block_size}: the teacher could not read the student's windows")
    _scalar("T", T, positive=True)
    _scalar("alpha", alpha, positive=False)
    val_data = train_data if val_data is None else val_data
    eval_every = max(1, steps // 10) if eval_every is None else eval_every
    warmup = steps // 10 if warmup is None else warmup
    cfg = student_config

    def val(p):
        return validation_loss(p, cfg, val_data, batch_size, eval_batches, seed + 1)

    init = gpt.init_params(cfg, np.random.default_rng(seed), dtype=np.float32)
    students = {name: tree.unflatten({n: a.copy() for n, a in tree.flatten(init).items()})
                for name in ("distilled", "scratch")}
    states = {name: optim.adamw_init(p) for name, p in students.items()}
    curves = {name: [(0, val(p))] for name, p in students.items()}
    batch_rng = np.random.default_rng(seed + 2)
    teacher_of = {}                                                  # window start -> teacher logits (T, V)
    if window_stride is not None:
        if isinstance(window_stride, bool) or not isinstance(window_stride, (int, np.integer)) or window_stride < 1 \
                or len(train_data) < cfg.block_size + 1:
            raise ValueError(f"window_stride: expected an int >= 1 and train_data of at least block_size + 1 = "
                             f"{cfg.block_size + 1} tokens, got {window_stride!r} and {len(train_data)} tokens")
        n_windows = (len(train_data) - cfg.block_size - 1) // window_stride + 1     # starts 0, s, 2s, ...
    for step in range(1, steps + 1):
        if window_stride is None:
            x, y = data.get_batch(train_data, batch_size, cfg.block_size, batch_rng)
            teacher_logits, _ = gpt.forward(teacher_params, teacher_config, x)         # (B, T, V)
        else:
            starts = batch_rng.integers(0, n_windows, size=batch_size) * window_stride  # (B,)
            idx = starts[:, None] + np.arange(cfg.block_size)                           # (B, T)
            x, y = train_data[idx].astype(np.int64), train_data[idx + 1].astype(np.int64)
            new = sorted(set(starts.tolist()) - set(teacher_of))
            if new:
                logits_new, _ = gpt.forward(teacher_params, teacher_config, x[[starts.tolist().index(a) for a in new]])
                teacher_of.update(zip(new, logits_new))
            teacher_logits = np.stack([teacher_of[a] for a in starts.tolist()])          # (B, T, V)
        lr_t = optim.warmup_cosine(step, lr, warmup, steps, min_lr=0.1 * lr)
        logits, cache = gpt.forward(students["distilled"], cfg, x)                     # (B, T, V)
        _, kd_cache = forward(logits, teacher_logits.astype(logits.dtype, copy=False), y, T, alpha)
        grads = {"distilled": gpt.backward(backward(1.0, kd_cache), cache),
                 "scratch": gpt.loss_and_grads(students["scratch"], cfg, x, y)[1]}
        for name, p in students.items():
            optim.clip_grad_norm(grads[name], grad_clip)
            optim.adamw_step(p, grads[name], states[name], lr_t, betas=(0.9, 0.95), weight_decay=weight_decay,
                             decay_mask=optim.decay_matrices)
            if step % eval_every == 0 or step == steps:
                curves[name].append((step, val(p)))
    teacher_val = validation_loss(teacher_params, teacher_config, val_data, batch_size, eval_batches, seed + 1,
                                  block_size=cfg.block_size)                 # the students' windows
    table = [{"model": "teacher", "params": gpt.n_params(teacher_params), "val_loss": teacher_val,
              "tokens_per_s": forward_tokens_per_second(teacher_params, teacher_config, batch_size)}]
    for name, p in students.items():
        table.append({"model": name, "params": gpt.n_params(p), "val_loss": curves[name][-1][1],
                      "tokens_per_s": forward_tokens_per_second(p, cfg, batch_size)})
    return {"curves": curves, "table": table, "students": students}
