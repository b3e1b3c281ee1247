r"""Sparse mixture of experts in the Mixtral form (Jiang et al. 2024; Shazeer et al. 2017), with its backward pass.

Each token :math:`x \in \mathbb{R}^C` is sent to :math:`k` of :math:`E` SwiGLU experts (:mod:`reference.ops.swiglu`),
chosen by a linear router, and their outputs are mixed with the router's renormalised probabilities:

.. math::

    \ell = x W_r, \qquad p = \mathrm{softmax}(\ell), \qquad S = \mathrm{top}_k(p), \qquad
    w_e = \frac{p_e}{\sum_{j \in S} p_j}\ (e \in S), \qquad
    y = \sum_{e \in S} w_e\, \mathrm{SwiGLU}_e(x).

Since :math:`p_e \propto e^{\ell_e}`, :math:`w` is the softmax of the :math:`k` chosen logits alone. Only :math:`k`
experts run per token, so the *active* parameters per token are :math:`k/E` of the experts' total.

**The choice of experts has no gradient.** :math:`S` is a step function of the logits: constant almost everywhere
(derivative 0) and jumping where two experts swap places (derivative undefined). At such a swap :math:`y` itself
jumps, by :math:`w\,(\mathrm{SwiGLU}_{new}(x) - \mathrm{SwiGLU}_{old}(x))`, because the expert leaving carries a
weight that is not 0 (``tests/ops/test_moe.py`` shows finite differences diverging there as :math:`1/h`). Away from
swaps the router learns only through the weights :math:`w` of the chosen experts, and through the load-balancing
loss below. With :math:`k = 1` the renormalised weight is always 1, so the router gets no gradient from the output
at all (the Switch Transformer, top-1, therefore weights by the unnormalised :math:`p_e`).

Backward (:func:`backward`), per expert, then through the router (:func:`router_backward`):

.. math::

    dw_e = \langle dy, \mathrm{SwiGLU}_e(x) \rangle, \qquad d\,\mathrm{SwiGLU}_e = w_e\, dy, \qquad
    dp_S = \frac{dw - \langle dw, w \rangle}{\sum_{j \in S} p_j}, \qquad
    d\ell = p \odot (dp - \langle dp, p \rangle),

with :math:`dp = 0` off :math:`S`; the unchosen logits then get exactly 0 (their :math:`p` cancels in :math:`w`).

**Load-balancing loss** (Switch Transformer, eqs. 4-6, in the form of ``transformers``' ``load_balancing_loss_func``
for Mixtral): over :math:`N` token rows,

.. math::

    f_e = \frac{1}{N}\,\#\{(n, j) : S_{n,j} = e\}, \qquad P_e = \frac1N \sum_n p_{n,e}, \qquad
    L_{aux} = E \sum_e f_e P_e,

which is :math:`k` for perfectly even routing (:math:`f_e = k/E`, :math:`P_e = 1/E`); a model adds
``router_aux_loss_coef`` (0.02 in Mixtral) times it to the language-model loss. :math:`f` counts choices: no
gradient; the gradient flows through :math:`P`. For a model, pass the router logits of all layers stacked along the
rows: ``transformers`` averages :math:`f` and :math:`P` over all layers' rows before the product (the product of the
averages, not the average of per-layer losses).

Shapes: ``x (..., C)``, ``W_router (C, E)``, ``W_gate, W_up (E, C, F)``, ``W_down (E, F, C)`` -> ``y (..., C)``.
Row-vector convention: Hugging Face's ``gate.weight`` (E, C) is ``W_router.T``, and expert e's ``gate_up_proj[e]``
(2F, C) stacks ``W_gate[e].T`` over ``W_up[e].T``.
"""
from typing import NamedTuple

import numpy as np

from reference._checks import check_float, check_same_dtype, check_shape
from reference.ops import swiglu


class Routing(NamedTuple):
    """The router's decision for N token rows (also the cache of :func:`router_backward`)."""

    probs: np.ndarray       # (N, E) softmax of the router logits
    experts: np.ndarray     # (N, k) int, the chosen experts, most probable first (ties: the lower index)
    weights: np.ndarray     # (N, k) their probabilities renormalised to sum to 1
    counts: np.ndarray      # (E,) int, how many tokens chose each expert (sums to N k)


class ExpertCache(NamedTuple):
    """One expert's share of the forward pass."""

    rows: np.ndarray        # (n_e,) the tokens routed to this expert
    slots: np.ndarray       # (n_e,) which of their k choices this expert was
    out: np.ndarray         # (n_e, C) SwiGLU_e(x[rows]), before weighting
    swiglu: swiglu.Cache


class Cache(NamedTuple):
    """What :func:`backward` needs from :func:`forward`; ``routing.counts`` is the per-expert token count."""

    x: np.ndarray           # (N, C) the token rows
    W_router: np.ndarray    # (C, E)
    logits: np.ndarray      # (N, E) router logits, for the load-balancing loss
    routing: Routing
    experts: tuple          # E ExpertCache
    shape: tuple            # x.shape


class AuxCache(NamedTuple):
    """What :func:`aux_loss_backward` needs from :func:`aux_loss_forward`."""

    probs: np.ndarray       # (N, E)
    f: np.ndarray           # (E,) fraction of the N rows' top-k choices that went to each expert


def router_forward(logits, top_k):
    r"""Softmax over the experts, the top-k per row, their probabilities renormalised.

    Parameters
    ----------
    logits : ndarray (N, E), float32 or float64
    top_k : int, 1 <= top_k <= E

    Returns
    -------
    Routing
        ``probs``, ``experts``, ``weights`` and ``counts``; also the cache of :func:`router_backward`.
    """
    check_float("logits", logits)
    if logits.ndim != 2:
        raise ValueError(f"logits: expected shape (N, E), got {logits.shape}")
    _check_top_k(top_k, logits.shape[1])
    probs = _softmax(logits)                                            # (N, E)
    experts = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]      # (N, k) the choice: a step function
    p_top = np.take_along_axis(probs, experts, axis=1)                  # (N, k)
    weights = p_top / p_top.sum(axis=1, keepdims=True)                  # (N, k) renormalised
    counts = np.bincount(experts.reshape(-1), minlength=logits.shape[1])   # (E,)
    return Routing(probs, experts, weights, counts)


def router_backward(dweights, routing):
    r"""Gradient of the routing weights with respect to the logits (the choice of experts has none).

    Parameters
    ----------
    dweights : ndarray (N, k)
    routing : Routing from :func:`router_forward`

    Returns
    -------
    dlogits : ndarray (N, E); exactly 0 (to rounding) on the experts that were not chosen
    """
    probs, experts, weights, _ = routing
    check_float("dweights", dweights)
    check_same_dtype(dweights=dweights, logits=probs)
    check_shape("dweights", dweights, weights.shape)
    p_top = np.take_along_axis(probs, experts, axis=1)                  # (N, k)
    # forward: weights = p_top / sum(p_top)
    dp_top = (dweights - np.sum(dweights * weights, axis=1, keepdims=True)) / p_top.sum(axis=1, keepdims=True)
    # forward: p_top = probs[experts], with the experts held fixed (they are piecewise constant in the logits)
    dprobs = np.zeros_like(probs)                                       # (N, E)
    np.put_along_axis(dprobs, experts, dp_top, axis=1)
    # forward: probs = softmax(logits)
    return probs * (dprobs - np.sum(dprobs * probs, axis=1, keepdims=True))


def forward(x, W_router, W_gate, W_up, W_down, top_k=2):
    r"""Mixture of SwiGLU experts: each token goes to its top-k experts, mixed by the renormalised router weights.

    Parameters
    ----------
    x : ndarray (..., C), float32 or float64
    W_router : ndarray (C, E)
    W_gate, W_up : ndarray (E, C, F)
    W_down : ndarray (E, F, C)
        All one dtype.
    top_k : int, 1 <= top_k <= E
        Experts per token (2 in Mixtral).

    Returns
    -------
    y : ndarray (..., C)
    cache : Cache
        ``cache.routing.counts`` holds the tokens per expert, ``cache.logits`` the router logits for
        :func:`aux_loss_forward`.
    """
    C, E = _check_inputs(x, W_router, W_gate, W_up, W_down, top_k)
    x2 = x.reshape(-1, C)                                               # (N, C)
    logits = x2 @ W_router                                              # (N, E)
    routing = router_forward(logits, top_k)
    y = np.zeros_like(x2)                                               # (N, C)
    experts = []
    for e in range(E):
        rows, slots = np.nonzero(routing.experts == e)                  # a token picks an expert at most once
        out, cache_e = swiglu.forward(x2[rows], W_gate[e], W_up[e], W_down[e])      # (n_e, C)
        y[rows] += routing.weights[rows, slots, None] * out             # y = sum_e w_e SwiGLU_e(x)
        experts.append(ExpertCache(rows, slots, out, cache_e))
    return y.reshape(x.shape), Cache(x2, W_router, logits, routing, tuple(experts), x.shape)


def backward(dy, cache, dlogits=None):
    r"""Gradients of the mixture of experts.

    Parameters
    ----------
    dy : ndarray (..., C), the forward input's shape and dtype
    cache : Cache from :func:`forward`
    dlogits : ndarray (N, E), optional
        A gradient on the router logits from elsewhere, e.g. :func:`aux_loss_backward` (its rows of this layer).

    Returns
    -------
    dx : ndarray (..., C)
    dW_router : ndarray (C, E)
    dW_gate, dW_up : ndarray (E, C, F)
    dW_down : ndarray (E, F, C)
    """
    x2, W_router, logits, routing, experts, shape = cache
    check_float("dy", dy)
    check_same_dtype(dy=dy, x=x2)
    check_shape("dy", dy, shape)
    if dlogits is not None:
        check_float("dlogits", dlogits)
        check_same_dtype(dy=dy, dlogits=dlogits)
        check_shape("dlogits", dlogits, logits.shape)
    dy2 = dy.reshape(x2.shape)                                          # (N, C)
    dx = np.zeros_like(x2)                                              # (N, C)
    dweights = np.zeros_like(routing.weights)                           # (N, k)
    grads = []
    for rows, slots, out, cache_e in experts:
        # forward: y[rows] += w[rows, slots] * out
        dweights[rows, slots] = np.sum(dy2[rows] * out, axis=1)
        dout = routing.weights[rows, slots, None] * dy2[rows]          # (n_e, C)
        # forward: out = SwiGLU_e(x[rows])
        dx_e, *dW_e = swiglu.backward(dout, cache_e)
        dx[rows] += dx_e
        grads.append(dW_e)
    dW_gate, dW_up, dW_down = (np.stack(g) for g in zip(*grads))
    # forward: weights = router(logits) (through the weights only: the choice of experts has no gradient)
    dlogits_all = router_backward(dweights, routing)                    # (N, E)
    if dlogits is not None:
        dlogits_all += dlogits
    # forward: logits = x W_router
    dx += dlogits_all @ W_router.T
    dW_router = x2.T @ dlogits_all                                      # (C, E)
    return dx.reshape(shape), dW_router, dW_gate, dW_up, dW_down


def aux_loss_forward(logits, top_k):
    r"""The load-balancing loss :math:`L_{aux} = E \sum_e f_e P_e` of ``transformers``' Mixtral.

    Parameters
    ----------
    logits : ndarray (N, E)
        Router logits; for a model, every layer's ``cache.logits`` stacked along the rows.
    top_k : int

    Returns
    -------
    loss : float, in logits' dtype (a NumPy scalar)
    cache : AuxCache
    """
    routing = router_forward(logits, top_k)
    N, E = logits.shape
    if N == 0:
        raise ValueError(f"logits: expected at least one row to average over, got shape {logits.shape}")
    f = (routing.counts / N).astype(logits.dtype)                       # (E,) sums to k; no gradient
    P = routing.probs.mean(axis=0)                                      # (E,) mean router probability
    loss = E * np.sum(f * P)
    return loss, AuxCache(routing.probs, f)


def aux_loss_backward(dloss, cache):
    r"""Gradient of the load-balancing loss with respect to the logits (through :math:`P` only).

    Parameters
    ----------
    dloss : float
        Upstream gradient, e.g. ``router_aux_loss_coef``.
    cache : AuxCache from :func:`aux_loss_forward`

    Returns
    -------
    dlogits : ndarray (N, E)
    """
    probs, f = cache
    N, E = probs.shape
    # forward: loss = E sum_e f_e P_e, f held fixed (counts of choices)
    dP = dloss * E * f                                                  # (E,)
    # forward: P = mean over the rows of probs
    dprobs = np.broadcast_to(dP / N, probs.shape)                       # (N, E)
    # forward: probs = softmax(logits)
    return probs * (dprobs - np.sum(dprobs * probs, axis=1, keepdims=True))


def _softmax(logits):
    """Row softmax, stable: exp(l - max l) / sum."""
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _check_top_k(top_k, E):
    if isinstance(top_k, (bool, np.bool_)) or not isinstance(top_k, (int, np.integer)):
        raise TypeError(f"top_k: expected an int, got {type(top_k).__name__}")
    if not 1 <= top_k <= E:
        raise ValueError(f"top_k: expected 1 <= top_k <= {E} (the number of experts), got {top_k}")


def _check_inputs(x, W_router, W_gate, W_up, W_down, top_k):
    """Validate the arguments of :func:`forward`; return (C, E)."""
    check_float("x", x, ndim_min=1)
    C = x.shape[-1]
    check_float("W_router", W_router)
    check_shape("W_router", W_router, (C, None))
    E = W_router.shape[1]
    check_float("W_gate", W_gate)
    check_shape("W_gate", W_gate, (E, C, None))
    check_float("W_up", W_up)
    check_shape("W_up", W_up, W_gate.shape)
    check_float("W_down", W_down)
    check_shape("W_down", W_down, (E, W_gate.shape[2], C))
    check_same_dtype(x=x, W_router=W_router, W_gate=W_gate, W_up=W_up, W_down=W_down)
    _check_top_k(top_k, E)
    return C, E
