"""Optimizers, learning-rate schedules and gradient clipping, as pure functions over nested parameters.

Parameters are a pytree: nested dicts and lists whose leaves are float32 or float64 arrays (the GPT's
``params``). Gradients have the same nesting; optimizer state holds a step counter and, per optimizer, trees
of the same nesting (velocity; first and second moments).

Each optimizer is a pair::

    state = adamw_init(params)
    params, state = adamw_step(params, grads, state, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)

The step **updates ``params`` and ``state`` in place** and returns them (the training loop calls it every step,
and a copy of every parameter per step would cost as much as the update). ``grads`` are never modified.
Every array keeps its dtype: the scalars (``lr``, the betas, the bias corrections) are Python floats, which
NumPy does not let promote a float32 array, and the temporaries are float32 for float32 parameters.

The conventions are PyTorch's, and the tests check each step against ``torch.optim``:

==============  ====================================================================================
``sgd``         :math:`g \\leftarrow g + \\lambda p;\\; p \\leftarrow p - \\eta g`
``momentum``    :math:`v \\leftarrow \\mu v + g;\\; p \\leftarrow p - \\eta v` (Nesterov: :math:`p \\leftarrow p -
                \\eta (g + \\mu v)`); ``torch.optim.SGD(momentum=mu)`` with ``dampening=0``
``adam``        :math:`g \\leftarrow g + \\lambda p` (L2 in the gradient), then the Adam update below
``adamw``       :math:`p \\leftarrow p (1 - \\eta \\lambda)` (decoupled weight decay), then the Adam update
==============  ====================================================================================

Adam update, step :math:`t = 1, 2, \\dots` (Kingma & Ba 2015, with PyTorch's placement of :math:`\\epsilon`):

.. math::

    m \\leftarrow \\beta_1 m + (1 - \\beta_1) g, \\quad v \\leftarrow \\beta_2 v + (1 - \\beta_2) g^2, \\quad
    p \\leftarrow p - \\frac{\\eta}{1 - \\beta_1^t} \\frac{m}{\\sqrt{v} / \\sqrt{1 - \\beta_2^t} + \\epsilon}

``adamw_step_fast`` is ``adamw_step`` for speed (cache-sized chunks, threads; the training benchmark uses it),
tested equal to it.

Weight decay can skip some parameters: ``decay_mask(path, param) -> bool`` is called with the leaf's path
(``"blocks/0/attn/Wq"``) and array; ``None`` decays every parameter, as one ``torch.optim`` param group does.
``decay_matrices`` is the usual choice: decay the weight matrices, not biases, LayerNorm gains or embeddings.
"""
import math

import numpy as np

from reference import _threads
from reference._checks import check_float

_CHUNK = 1 << 14                # elements per chunk of adamw_step_fast: a chunk's four arrays stay in the L2 cache
_MIN_PARALLEL = 1 << 17         # parameters below which threads cost more than they save


def _walk(params, others, names, path="", root="params"):
    """Yield ``(path, p, *leaves of others)`` for every leaf of ``params`` (called ``root`` in errors); the
    other trees (called ``names``) must match its nesting, shapes and dtypes."""
    if isinstance(params, dict):
        for tree, name in zip(others, names):
            if not isinstance(tree, dict) or set(tree) != set(params):
                got = sorted(tree) if isinstance(tree, dict) else type(tree).__name__
                raise ValueError(f"{name} at '{path}': expected a dict with keys {sorted(params)}, got {got}")
        for key, sub in params.items():
            yield from _walk(sub, [t[key] for t in others], names, f"{path}/{key}" if path else str(key), root)
    elif isinstance(params, (list, tuple)):
        for tree, name in zip(others, names):
            if not isinstance(tree, (list, tuple)) or len(tree) != len(params):
                got = f"length {len(tree)}" if isinstance(tree, (list, tuple)) else type(tree).__name__
                raise ValueError(f"{name} at '{path}': expected a list of length {len(params)}, got {got}")
        for i, sub in enumerate(params):
            yield from _walk(sub, [t[i] for t in others], names, f"{path}/{i}" if path else str(i), root)
    else:
        where = path or "<root>"
        check_float(f"{root} at '{where}'", params)
        for tree, name in zip(others, names):
            check_float(f"{name} at '{where}'", tree)
            if tree.dtype != params.dtype or tree.shape != params.shape:
                raise ValueError(f"{name} at '{where}': expected {params.dtype} {params.shape} like the parameter, "
                                 f"got {tree.dtype} {tree.shape}")
        yield (path, params, *others)


def _zeros_like(params, path=""):
    """A tree of zeros with the nesting, shapes and dtypes of ``params``."""
    if isinstance(params, dict):
        return {k: _zeros_like(v, f"{path}/{k}" if path else str(k)) for k, v in params.items()}
    if isinstance(params, (list, tuple)):
        return [_zeros_like(v, f"{path}/{i}" if path else str(i)) for i, v in enumerate(params)]
    return np.zeros_like(check_float(f"params at '{path or '<root>'}'", params))


def _scalar(name, value, low=0.0, low_open=False, high=None):
    """``value`` as a Python float (so it never promotes float32), checked against its range."""
    x = float(value)
    if not math.isfinite(x) or x < low or (low_open and x == low) or (high is not None and x >= high):
        rng = f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'})"
        raise ValueError(f"{name}: expected a finite number in {rng}, got {value!r}")
    return x


def _decays(decay_mask, weight_decay, path, p):
    return weight_decay != 0.0 and (decay_mask is None or bool(decay_mask(path, p)))


def decay_matrices(path, param):
    """Weight-decay mask: decay matrices (ndim >= 2) except the embeddings ``wte`` and ``wpe``; keep biases,
    LayerNorm gains and shifts, and embeddings undecayed."""
    return param.ndim >= 2 and path.rsplit("/", 1)[-1] not in ("wte", "wpe")


# --- SGD ------------------------------------------------------------------------------------------------------


def sgd_init(params):
    """State of plain SGD: only the step counter."""
    list(_walk(params, [], []))                                # validates the tree
    return {"step": 0}


def sgd_step(params, grads, state, lr, weight_decay=0.0, decay_mask=None):
    """One SGD step, in place: :math:`p \\leftarrow p - \\eta (g + \\lambda p)` (``torch.optim.SGD``)."""
    lr = _scalar("lr", lr)
    weight_decay = _scalar("weight_decay", weight_decay)
    for path, p, g in _walk(params, [grads], ["grads"]):
        if _decays(decay_mask, weight_decay, path, p):
            g = g + p * weight_decay                           # (same as p)  a new array: grads stay untouched
        p -= g * lr
    state["step"] = int(state["step"]) + 1
    return params, state


# --- SGD with momentum ----------------------------------------------------------------------------------------


def momentum_init(params):
    """State of SGD with momentum: the step counter and a zero velocity per parameter."""
    return {"step": 0, "velocity": _zeros_like(params)}


def momentum_step(params, grads, state, lr, mu=0.9, nesterov=False, weight_decay=0.0, decay_mask=None):
    """One step of SGD with momentum, in place (``torch.optim.SGD(momentum=mu, nesterov=...)``).

    .. math:: g \\leftarrow g + \\lambda p,\\quad v \\leftarrow \\mu v + g,\\quad
              p \\leftarrow p - \\eta v \\;\\; (\\text{Nesterov: } p \\leftarrow p - \\eta (g + \\mu v))

    PyTorch starts with ``v = g`` at the first step; starting from ``v = 0`` gives the same ``mu * 0 + g``.
    """
    lr = _scalar("lr", lr)
    mu = _scalar("mu", mu, high=1.0)
    weight_decay = _scalar("weight_decay", weight_decay)
    for path, p, g, v in _walk(params, [grads, state["velocity"]], ["grads", "velocity"]):
        if _decays(decay_mask, weight_decay, path, p):
            g = g + p * weight_decay                           # (same as p)  a new array: grads stay untouched
        v *= mu
        v += g
        if nesterov:
            upd = v * mu                                       # (same as p)  g + mu v
            upd += g
            upd *= lr
        else:
            upd = v * lr                                       # (same as p)
        p -= upd
    state["step"] = int(state["step"]) + 1
    return params, state


# --- Adam and AdamW -------------------------------------------------------------------------------------------


def adam_init(params):
    """State of Adam/AdamW: the step counter and zero first and second moments ``m``, ``v``."""
    return {"step": 0, "m": _zeros_like(params), "v": _zeros_like(params)}


adamw_init = adam_init


def _adam(params, grads, state, lr, betas, eps, weight_decay, decay_mask, decoupled):
    lr, beta1, beta2, eps, weight_decay = _adam_scalars(lr, betas, eps, weight_decay)
    t = int(state["step"]) + 1
    for path, p, g, m, v in _walk(params, [grads, state["m"], state["v"]], ["grads", "m", "v"]):
        if _decays(decay_mask, weight_decay, path, p):
            if decoupled:
                p *= 1.0 - lr * weight_decay                   # AdamW: p <- p (1 - eta lambda)
            else:
                g = g + weight_decay * p                       # Adam: g <- g + lambda p (a new array)
        m[...] = beta1 * m + (1.0 - beta1) * g                 # first moment
        v[...] = beta2 * v + (1.0 - beta2) * g * g             # second moment
        m_hat = m / (1.0 - beta1 ** t)                         # bias corrections: m and v start at 0
        v_hat = v / (1.0 - beta2 ** t)
        p -= lr * m_hat / (np.sqrt(v_hat) + eps)
    state["step"] = t
    return params, state


def _adam_scalars(lr, betas, eps, weight_decay):
    return (_scalar("lr", lr), _scalar("betas[0]", betas[0], high=1.0), _scalar("betas[1]", betas[1], high=1.0),
            _scalar("eps", eps), _scalar("weight_decay", weight_decay))


def adam_step(params, grads, state, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decay_mask=None):
    """One Adam step, in place (``torch.optim.Adam``); ``weight_decay`` is L2 added to the gradient."""
    return _adam(params, grads, state, lr, betas, eps, weight_decay, decay_mask, decoupled=False)


def adamw_step(params, grads, state, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, decay_mask=None):
    """One AdamW step, in place (``torch.optim.AdamW``): decoupled weight decay
    :math:`p \\leftarrow p(1 - \\eta\\lambda)`, then the bias-corrected Adam update (Loshchilov & Hutter 2019)."""
    return _adam(params, grads, state, lr, betas, eps, weight_decay, decay_mask, decoupled=True)


def adamw_step_fast(params, grads, state, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, decay_mask=None):
    """:func:`adamw_step` over cache-sized chunks of every parameter, in place, the chunks split over threads.

    The steps of one chunk (``_CHUNK`` elements) run on a scratch buffer that stays in the CPU cache, instead of
    walking each whole parameter once per step; a parameter that is not contiguous (its flat view would be a copy)
    takes :func:`adamw_step`'s path. Same results as :func:`adamw_step` to rounding (the tests hold them equal).
    """
    lr, beta1, beta2, eps, weight_decay = _adam_scalars(lr, betas, eps, weight_decay)
    t = int(state["step"]) + 1
    bc1, bc2 = 1.0 - beta1 ** t, 1.0 - beta2 ** t
    chunks = []                                                # (p, g, m, v, decay factor or None), 1-d views
    for path, p, g, m, v in _walk(params, [grads, state["m"], state["v"]], ["grads", "m", "v"]):
        decay = 1.0 - lr * weight_decay if _decays(decay_mask, weight_decay, path, p) else None
        if not all(a.flags.c_contiguous for a in (p, m, v)):
            _adam({"p": p}, {"p": g}, {"step": t - 1, "m": {"p": m}, "v": {"p": v}}, lr, (beta1, beta2), eps,
                  weight_decay if decay is not None else 0.0, None, decoupled=True)
            continue
        flats = [a.reshape(-1) for a in (p, g, m, v)]
        chunks += [[f[s:s + _CHUNK] for f in flats] + [decay] for s in range(0, p.size, _CHUNK)]

    def run(part):
        scratch = {}
        for pc, gc, mc, vc, decay in chunks[part]:
            tmp = scratch.setdefault(pc.dtype, np.empty(_CHUNK, dtype=pc.dtype))[:pc.size]
            if decay is not None:
                pc *= decay                                    # p <- p (1 - eta lambda)
            np.subtract(gc, mc, out=tmp)
            tmp *= 1.0 - beta1
            mc += tmp                                          # m <- m + (1 - beta1)(g - m)
            np.multiply(gc, gc, out=tmp)
            tmp *= 1.0 - beta2
            vc *= beta2
            vc += tmp                                          # v <- beta2 v + (1 - beta2) g^2
            np.divide(vc, bc2, out=tmp)
            np.sqrt(tmp, out=tmp)
            tmp += eps                                         # sqrt(v_hat) + eps
            np.divide(mc, tmp, out=tmp)
            tmp *= lr / bc1                                    # eta m_hat / (sqrt(v_hat) + eps)
            pc -= tmp

    _threads.run(run, _threads.parts(len(chunks), _threads.workers_for(sum(c[0].size for c in chunks),
                                                                        _MIN_PARALLEL)))
    state["step"] = t
    return params, state


OPTIMIZERS = {
    "sgd": (sgd_init, sgd_step),
    "momentum": (momentum_init, momentum_step),
    "adam": (adam_init, adam_step),
    "adamw": (adamw_init, adamw_step),
}


# --- learning-rate schedules ----------------------------------------------------------------------------------


def _step_number(step):
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"step: expected an integer >= 1 (the number of the update, counted from 1), got {step!r}")
    return int(step)


def noam(step, d_model, warmup):
    """The Transformer paper's schedule (Vaswani et al. 2017, eq. 3): linear warm-up, then inverse square root.

    .. math:: \\eta(s) = d_{model}^{-0.5} \\min(s^{-0.5},\\; s \\cdot w^{-1.5})

    The two branches meet at ``s = warmup``, where the rate peaks at ``(d_model * warmup) ** -0.5``
    (d_model = 512, warmup = 4000: 6.99e-4). Steps count from 1, as in the paper.
    """
    s = _step_number(step)
    if d_model < 1 or warmup < 1:
        raise ValueError(f"noam: expected d_model >= 1 and warmup >= 1, got d_model={d_model}, warmup={warmup}")
    return float(d_model) ** -0.5 * min(s ** -0.5, s * float(warmup) ** -1.5)


def warmup_cosine(step, max_lr, warmup, total, min_lr=0.0):
    """Linear warm-up to ``max_lr``, then half a cosine down to ``min_lr`` at step ``total``; ``min_lr`` after.

    .. math::
        \\eta(s) = \\begin{cases} \\eta_{max}\\, s / w & s \\le w \\\\
        \\eta_{min} + \\tfrac12 (\\eta_{max} - \\eta_{min})
        \\left(1 + \\cos\\left(\\pi \\frac{s - w}{S - w}\\right)\\right) & w < s < S \\\\ \\eta_{min} & s \\ge S \\end{cases}

    Steps count from 1 (the first update uses ``max_lr / warmup``). The warm-up is ``torch``'s
    ``LinearLR(start_factor=1/w, total_iters=w-1)`` and the decay its ``CosineAnnealingLR(T_max=S-w)``.
    """
    s = _step_number(step)
    if not 0 <= warmup <= total:
        raise ValueError(f"warmup_cosine: expected 0 <= warmup <= total, got warmup={warmup}, total={total}")
    if not 0.0 <= min_lr <= max_lr:
        raise ValueError(f"warmup_cosine: expected 0 <= min_lr <= max_lr, got min_lr={min_lr}, max_lr={max_lr}")
    max_lr, min_lr = float(max_lr), float(min_lr)
    if s <= warmup:
        return max_lr * s / warmup
    if s >= total:
        return min_lr
    progress = (s - warmup) / (total - warmup)
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


# --- gradient clipping ----------------------------------------------------------------------------------------


def clip_grad_norm(grads, max_norm):
    """Scale all gradients together so that their global L2 norm is at most ``max_norm``, in place.

    .. math:: \\|g\\| = \\sqrt{\\textstyle\\sum_i \\|g_i\\|_2^2},\\qquad
              g_i \\leftarrow g_i \\cdot \\min\\left(1, \\frac{c}{\\|g\\| + 10^{-6}}\\right)

    as ``torch.nn.utils.clip_grad_norm_``. A non-finite norm (an overflow upstream) is returned as it is, and
    the gradients are scaled by the resulting coefficient as torch does: check ``math.isfinite(total_norm)``
    to skip such a step.

    Returns
    -------
    grads : the same tree, scaled in place
    total_norm : float
        The norm before clipping.
    """
    max_norm = _scalar("max_norm", max_norm, low_open=True)
    leaves = [g for _, g in _walk(grads, [], [], root="grads")]
    total_norm = math.sqrt(sum(float(np.vdot(g, g)) for g in leaves))
    clip_coef = max_norm / (total_norm + 1e-6)
    if not clip_coef >= 1.0:
        for g in leaves:
            g *= clip_coef
    return grads, total_norm
