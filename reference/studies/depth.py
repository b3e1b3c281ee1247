r"""Deep stacks of Transformer blocks with and without residuals and LayerNorm: gradients through depth (material §5.2).

The material names "梯度爆炸、梯度消失" (exploding and vanishing gradients) as a challenge of large models. Whether
the gradient survives the trip from the loss back to the first layer depends on how each block is wired, and this
module builds the same block five ways so that the wirings can be measured against each other at initialisation.

A block is two sublayers, self-attention :math:`S_1 = \operatorname{MHA}(u, u)` and the FFN
:math:`S_2(u) = \operatorname{act}(u W_1 + b_1) W_2 + b_2`, and every sublayer :math:`S` is wrapped one of five ways:

==============  ============================================  ==============================================
variant         one sublayer                                  what it is
==============  ============================================  ==============================================
``plain``       :math:`y = S(x)`                              a plain deep network: no skip, no norm
``ln``          :math:`y = \operatorname{LN}(S(x))`           a norm but no skip (as §3.3 of the material)
``residual``    :math:`y = x + S(x)`                          a skip but no norm
``post_ln``     :math:`y = \operatorname{LN}(x + S(x))`       the paper (Vaswani et al. 2017)
``pre_ln``      :math:`y = x + S(\operatorname{LN}(x))`       GPT-2 and most models since; a last LN on top
==============  ============================================  ==============================================

The post-LN and pre-LN blocks compute exactly what :func:`reference.models.layers.encoder_layer_forward` computes (the
tests check it); the other three exist only here, as the experiment's controls.

The backward pass of one wrapper, with :math:`J_S` the sublayer's Jacobian and :math:`J_{LN}` LayerNorm's:

.. math::

    \text{plain: } dx = J_S^\top dy, \quad
    \text{ln: } dx = J_S^\top J_{LN}^\top dy, \quad
    \text{residual: } dx = dy + J_S^\top dy,

    \text{post-LN: } dx = (I + J_S)^\top J_{LN}^\top dy, \quad
    \text{pre-LN: } dx = dy + J_{LN}^\top J_S^\top dy .

Through :math:`L` blocks these products multiply. The identity term of the residual wirings gives the gradient a
path that no product can shrink; LayerNorm's Jacobian divides by the standard deviation of its input, so it undoes
whatever scale the layers below gave the signal. :func:`gradient_norms_by_layer` measures the result.

Shapes: ``x`` (B, T, C), C = d_model = ``width``, H = ``n_head``, d_ff = ``4 C`` by default.

Parameters are nested dicts, gradients come back with the same nesting::

    {"blocks": [{"attn": {Wq, Wk, Wv, Wo, bq, bk, bv, bo}, "ffn": {W1, b1, W2, b2},
                 "ln1": {gamma, beta}, "ln2": {gamma, beta}}   # ln1, ln2 only in "ln", "post_ln", "pre_ln"
                ... depth],
     "ln_f": {gamma, beta}}                                    # only in "pre_ln"
"""
import math

import numpy as np

from reference._checks import check_float
from reference.ops import ffn, layernorm, multihead
from reference.training import init

VARIANTS = ("plain", "ln", "residual", "post_ln", "pre_ln")
INITS = ("xavier", "gpt2")
_HAS_LN = ("ln", "post_ln", "pre_ln")


def _check_variant(variant):
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {VARIANTS}, got {variant!r}")


def _check_positive_int(name, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")


# ---------------------------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------------------------

def init_stack(variant, depth, width, rng, n_head=4, d_ff=None, init_scheme="xavier", dtype=np.float64):
    r"""Parameters of a ``depth``-block stack of the given ``variant`` at initialisation.

    Parameters
    ----------
    variant : {"plain", "ln", "residual", "post_ln", "pre_ln"}
    depth : int
        Number of blocks L (each holds an attention and an FFN sublayer).
    width : int
        C = d_model; a multiple of ``n_head``.
    rng : numpy.random.Generator
    n_head : int
    d_ff : int, optional
        FFN width, ``4 * width`` by default.
    init_scheme : {"xavier", "gpt2"}
        ``"xavier"``: every matrix :math:`\mathcal{N}(0, 2/(n_{in} + n_{out}))` (``init.xavier_normal``), as in
        common implementations of the original Transformer. ``"gpt2"``: every matrix :math:`\mathcal{N}(0, 0.02^2)`
        and the two projections into the residual stream (``Wo``, ``W2``) :math:`\mathcal{N}(0, 0.02^2 / 2L)`
        (``init.scaled_residual``), as ``gpt.init_params``. Biases 0, LayerNorm gains 1 and shifts 0 in both.
    dtype : float32 or float64

    Returns
    -------
    params : dict, the nesting in the module docstring.
    """
    _check_variant(variant)
    _check_positive_int("depth", depth)
    _check_positive_int("width", width)
    _check_positive_int("n_head", n_head)
    if width % n_head:
        raise ValueError(f"width={width} is not divisible by n_head={n_head}")
    d_ff = 4 * width if d_ff is None else d_ff
    _check_positive_int("d_ff", d_ff)
    if init_scheme not in INITS:
        raise ValueError(f"init_scheme: expected one of {INITS}, got {init_scheme!r}")
    dtype = np.dtype(dtype)
    C = width

    def matrix(shape, into_residual=False):
        if init_scheme == "xavier":
            return init.xavier_normal(shape, rng, dtype=dtype)
        if into_residual:
            return init.scaled_residual(shape, rng, depth, std=0.02, dtype=dtype)
        return init.normal(shape, rng, std=0.02, dtype=dtype)

    def ln():
        return {"gamma": np.ones(C, dtype=dtype), "beta": np.zeros(C, dtype=dtype)}

    blocks = []
    for _ in range(depth):
        attn = {"Wq": matrix((C, C)), "Wk": matrix((C, C)), "Wv": matrix((C, C)), "Wo": matrix((C, C), True)}
        attn.update({b: np.zeros(C, dtype=dtype) for b in multihead.BIASES})
        block = {"attn": attn,
                 "ffn": {"W1": matrix((C, d_ff)), "b1": np.zeros(d_ff, dtype=dtype),
                         "W2": matrix((d_ff, C), True), "b2": np.zeros(C, dtype=dtype)}}
        if variant in _HAS_LN:
            block["ln1"], block["ln2"] = ln(), ln()
        blocks.append(block)
    params = {"blocks": blocks}
    if variant == "pre_ln":
        params["ln_f"] = ln()
    return params


# ---------------------------------------------------------------------------------------------------------------
# One sublayer in its wrapper
# ---------------------------------------------------------------------------------------------------------------

def _attention_forward(u, p, n_head, activation):
    return multihead.forward_fast(u, u, p, n_head)                      # (B, T, C), no mask: an encoder


def _attention_backward(ds, cache):
    # forward: s = MHA(u, u): u is the queries' and the keys'/values' input, so its gradient is the sum
    du_q, du_kv, dp = multihead.backward_fast(ds, cache)
    return du_q + du_kv, dp


def _ffn_forward(u, p, n_head, activation):
    return ffn.forward_fast(u, p["W1"], p["b1"], p["W2"], p["b2"], activation)   # (B, T, C)


def _ffn_backward(ds, cache):
    # forward: s = act(u W1 + b1) W2 + b2
    du, dW1, db1, dW2, db2 = ffn.backward_fast(ds, cache)
    return du, {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


def _wrap_forward(x, sublayer, p, ln, variant, n_head, activation, eps):
    """One sublayer in its wrapper (the module docstring's table). x, y: (B, T, C)."""
    c_ln = None
    if variant == "pre_ln":
        u, c_ln = layernorm.forward_fast(x, ln["gamma"], ln["beta"], eps)           # (B, T, C)
        s, c_sub = sublayer(u, p, n_head, activation)
        y = x + s
    else:
        s, c_sub = sublayer(x, p, n_head, activation)                          # (B, T, C)
        r = x + s if variant in ("residual", "post_ln") else s
        if variant in ("ln", "post_ln"):
            y, c_ln = layernorm.forward_fast(r, ln["gamma"], ln["beta"], eps)
        else:
            y = r
    return y, (variant, c_sub, c_ln)


def _wrap_backward(dy, cache, sublayer_backward):
    """Returns (dx, dparams of the sublayer, dln or None)."""
    variant, c_sub, c_ln = cache
    dln = None
    if variant == "pre_ln":
        # forward: y = x + S(u), u = LN(x)
        du, dp = sublayer_backward(dy, c_sub)
        dx_ln, dgamma, dbeta = layernorm.backward_fast(du, c_ln)
        dln = {"gamma": dgamma, "beta": dbeta}
        return dy + dx_ln, dp, dln                # the skip and the path through LN and the sublayer
    dr = dy
    if variant in ("ln", "post_ln"):
        # forward: y = LN(r)
        dr, dgamma, dbeta = layernorm.backward_fast(dy, c_ln)
        dln = {"gamma": dgamma, "beta": dbeta}
    # forward: r = x + S(x)  (residual, post_ln)   or   r = S(x)  (plain, ln)
    dx, dp = sublayer_backward(dr, c_sub)
    if variant in ("residual", "post_ln"):
        dx = dx + dr                              # the skip
    return dx, dp, dln


# ---------------------------------------------------------------------------------------------------------------
# The stack
# ---------------------------------------------------------------------------------------------------------------

def _check_params(params, variant):
    if not isinstance(params, dict) or not isinstance(params.get("blocks"), list) or not params["blocks"]:
        raise ValueError("params: expected a dict with a non-empty list 'blocks' (see init_stack)")
    keys = {"attn", "ffn"} | ({"ln1", "ln2"} if variant in _HAS_LN else set())
    for i, block in enumerate(params["blocks"]):
        if not isinstance(block, dict) or set(block) != keys:
            got = sorted(block) if isinstance(block, dict) else type(block).__name__
            raise ValueError(f"params['blocks'][{i}]: expected keys {sorted(keys)} for variant {variant!r}, "
                             f"got {got}")
    if (variant == "pre_ln") != ("ln_f" in params):
        raise ValueError(f"params: 'ln_f' is needed by variant 'pre_ln' and only by it; variant {variant!r}, "
                         f"keys {sorted(params)}")


def stack_forward(x, params, variant, n_head, activation="relu", eps=1e-5):
    r"""Run ``x`` through every block of the stack.

    Parameters
    ----------
    x : ndarray (B, T, C), float32 or float64
    params : dict from :func:`init_stack` (same ``variant``), x's dtype
    variant : {"plain", "ln", "residual", "post_ln", "pre_ln"}
    n_head : int
    activation : {"relu", "gelu", "gelu_tanh"}
        The FFN's nonlinearity (ReLU in the paper).
    eps : float
        LayerNorm epsilon.

    Returns
    -------
    y : ndarray (B, T, C), x's dtype
        :math:`x_L`, or :math:`\operatorname{LN}_f(x_L)` for ``pre_ln``.
    cache : for :func:`stack_backward`; ``cache[0]`` is the list of block inputs :math:`x_0, \dots, x_L`.
    """
    _check_variant(variant)
    check_float("x", x)
    if x.ndim != 3:
        raise ValueError(f"x: expected shape (B, T, C), got {x.shape}")
    _check_params(params, variant)
    xs, block_caches = [x], []
    for p in params["blocks"]:
        h, c1 = _wrap_forward(x, _attention_forward, p["attn"], p.get("ln1"), variant, n_head, activation, eps)
        x, c2 = _wrap_forward(h, _ffn_forward, p["ffn"], p.get("ln2"), variant, n_head, activation, eps)
        xs.append(x)
        block_caches.append((c1, c2))
    c_f = None
    if variant == "pre_ln":
        x, c_f = layernorm.forward_fast(x, params["ln_f"]["gamma"], params["ln_f"]["beta"], eps)   # (B, T, C)
    return x, (xs, block_caches, c_f, variant)


def stack_backward(dy, cache):
    """Gradients of :func:`stack_forward`.

    Parameters
    ----------
    dy : ndarray (B, T, C), the output's dtype
    cache : from :func:`stack_forward`

    Returns
    -------
    dx : ndarray (B, T, C)
        The gradient at the stack's input.
    grads : dict with the nesting of ``params``
    dxs : list of depth + 1 ndarrays (B, T, C)
        ``dxs[l]`` is the gradient at block l's input :math:`x_l` (``dxs[0] is dx``; ``dxs[L]`` is the gradient
        at the last block's output): the quantity this module is about.
    """
    xs, block_caches, c_f, variant = cache
    check_float("dy", dy)
    if dy.shape != xs[-1].shape or dy.dtype != xs[-1].dtype:
        raise ValueError(f"dy: expected {xs[-1].dtype} {xs[-1].shape} like the output, got {dy.dtype} {dy.shape}")
    grads = {}
    dx = dy
    if variant == "pre_ln":
        # forward: y = LN_f(x_L)
        dx, dgamma, dbeta = layernorm.backward_fast(dy, c_f)
        grads["ln_f"] = {"gamma": dgamma, "beta": dbeta}
    dxs, block_grads = [dx], []
    for c1, c2 in reversed(block_caches):
        # forward: x_{l+1} = Wrap(h, FFN)
        dh, dffn, dln2 = _wrap_backward(dx, c2, _ffn_backward)
        # forward: h = Wrap(x_l, MHA)
        dx, dattn, dln1 = _wrap_backward(dh, c1, _attention_backward)
        g = {"attn": dattn, "ffn": dffn}
        if dln1 is not None:
            g["ln1"], g["ln2"] = dln1, dln2
        block_grads.append(g)
        dxs.append(dx)
    grads["blocks"] = block_grads[::-1]
    return dx, grads, dxs[::-1]


# ---------------------------------------------------------------------------------------------------------------
# The measurement
# ---------------------------------------------------------------------------------------------------------------

def _norm(tree):
    """sqrt(sum of squares) over every array of a nested dict, in float64."""
    if isinstance(tree, dict):
        return math.sqrt(sum(_norm(v) ** 2 for v in tree.values()))
    return float(np.linalg.norm(tree.astype(np.float64, copy=False)))


def gradient_norms_by_layer(variant, depth, width, rng, n_head=4, batch=4, seq_len=16, init_scheme="xavier",
                            activation="relu", dtype=np.float64):
    r"""Gradient norms of every block of a freshly initialised stack, for one random input and upstream gradient.

    The input is :math:`x_0 \sim \mathcal{N}(0, 1)` of shape (B, T, C) (an embedding at unit scale) and the loss is
    :math:`\ell = \langle G, y \rangle` with a fixed :math:`G \sim \mathcal{N}(0, 1)`, so the gradient arriving at
    the top is :math:`G` for every variant and only the wiring below it differs.

    Parameters
    ----------
    variant : {"plain", "ln", "residual", "post_ln", "pre_ln"}
    depth, width : int
        L blocks of width C.
    rng : numpy.random.Generator
        Draws the parameters, then :math:`x_0`, then :math:`G`.
    n_head, batch, seq_len : int
    init_scheme : {"xavier", "gpt2"}
        See :func:`init_stack`.
    activation : {"relu", "gelu", "gelu_tanh"}
    dtype : float32 or float64

    Returns
    -------
    dict of float64 arrays:
        ``"activation"`` (depth + 1,): :math:`\|\partial\ell/\partial x_l\|_F` at block l's input (index L: the
        last block's output); ``"params"`` (depth,): the norm of all of block l's parameter gradients together;
        ``"forward_rms"`` (depth + 1,): the root mean square of :math:`x_l` itself.
    """
    _check_positive_int("batch", batch)
    _check_positive_int("seq_len", seq_len)
    params = init_stack(variant, depth, width, rng, n_head=n_head, init_scheme=init_scheme, dtype=dtype)
    x = rng.standard_normal((batch, seq_len, width)).astype(dtype)         # (B, T, C)
    y, cache = stack_forward(x, params, variant, n_head, activation=activation)
    G = rng.standard_normal(y.shape).astype(dtype)                          # (B, T, C)
    _, grads, dxs = stack_backward(G, cache)
    return {"activation": np.array([_norm(d) for d in dxs]),
            "params": np.array([_norm(g) for g in grads["blocks"]]),
            "forward_rms": np.array([math.sqrt(float(np.mean(np.square(h, dtype=np.float64)))) for h in cache[0]])}
