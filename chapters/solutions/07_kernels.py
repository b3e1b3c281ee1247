r"""Worked solutions to the exercises of chapter 7 ("From equations to kernels").

``tests/book/test_solutions_07.py`` runs every function here against ``reference/``, so the solutions stay right as the
reference changes. Each function answers one exercise; its docstring gives the reasoning. NumPy only: the
algorithms are the kernels', written so that they can be checked in float64.
"""
import math

import numpy as np

from reference.ops import activations, attention


def merge_partial_attention(outs, lses):
    r"""Exercise 1: combine attention computed over disjoint chunks of keys into attention over all of them.

    Chunk :math:`s` gives :math:`o_s = \sum_{j \in s} e^{S_j - \text{lse}_s} v_j` with
    :math:`\text{lse}_s = \log \sum_{j \in s} e^{S_j}`. Over all keys,
    :math:`e^{\text{lse}} = \sum_j e^{S_j} = \sum_s e^{\text{lse}_s}`, and

    .. math::
        o = \sum_j e^{S_j - \text{lse}} v_j = \sum_s e^{\text{lse}_s - \text{lse}} \sum_{j \in s} e^{S_j - \text{lse}_s} v_j
          = \sum_s e^{\text{lse}_s - \text{lse}}\, o_s .

    The weights :math:`e^{\text{lse}_s - \text{lse}}` are the share of each chunk in the softmax's denominator,
    and they sum to 1. This is the online-softmax update of §7.2 with :math:`m` and :math:`\ell` folded into one
    number, lse. It is computed stably with the largest lse subtracted first. A row whose keys are all masked in
    chunk :math:`s` has :math:`\text{lse}_s = -\infty` and weight 0. A row masked in every chunk gets
    :math:`o = 0`, :math:`\text{lse} = -\infty`, as ``forward_blocked`` gives it.

    Parameters
    ----------
    outs : sequence of ndarray, each (..., T_q, d_v)
    lses : sequence of ndarray, each (..., T_q)
        ``forward_blocked``'s results for each chunk of keys.

    Returns
    -------
    out : ndarray (..., T_q, d_v)
    lse : ndarray (..., T_q)
    """
    lse_s = np.stack(lses)                                  # (n, ..., T_q)
    m = lse_s.max(axis=0)                                   # (..., T_q)
    m_ref = np.where(m == -np.inf, 0.0, m)                  # rows masked everywhere: exp(-inf - 0) = 0, no NaN
    w = np.exp(lse_s - m_ref)                               # (n, ..., T_q) unnormalised chunk weights
    total = w.sum(axis=0)                                   # (..., T_q)
    seen = total > 0
    lse = np.where(seen, m_ref + np.log(np.where(seen, total, 1.0)), -np.inf)
    w = w / np.where(seen, total, 1.0)                      # (n, ..., T_q) weights summing to 1 (0 if unseen)
    out = np.einsum("n...t,n...td->...td", w, np.stack(outs))   # (..., T_q, d_v)
    return out, lse


def split_kv_attention(q, k, v, n_chunks, mask=None, block_size=16):
    """Exercise 1, end to end: ``forward_blocked`` on ``n_chunks`` chunks of the keys, then the merge.

    Parameters
    ----------
    q : ndarray (..., T_q, d_k)
    k, v : ndarray (..., T_k, d_k), (..., T_k, d_v)
    n_chunks : int
        Number of key chunks (at most T_k); the chunks are as equal as ``np.array_split`` makes them.
    mask : ndarray of bool (T_q, T_k), optional
    block_size : int
        Passed to ``forward_blocked`` for each chunk.

    Returns
    -------
    out : ndarray (..., T_q, d_v)
    lse : ndarray (..., T_q)
    """
    outs, lses = [], []
    for cols in np.array_split(np.arange(k.shape[-2]), n_chunks):
        chunk_mask = None if mask is None else mask[..., cols]
        o_s, lse_s = attention.forward_blocked(q, k[..., cols, :], v[..., cols, :], mask=chunk_mask,
                                               block_size=block_size)
        outs.append(o_s)
        lses.append(lse_s)
    return merge_partial_attention(outs, lses)


def two_stage_reduction(dy, xhat, G):
    r"""Exercise 2: :math:`d\gamma` and :math:`d\beta` as the LayerNorm kernel computes them, for ``G`` programs.

    Stage 1: program :math:`g` sums rows :math:`g, g + G, g + 2G, \dots` (one row at a time, as it walks them)
    into row :math:`g` of a :math:`(G, N)` buffer. Stage 2: the :math:`G` rows are summed in order.
    :math:`\sum_g \sum_{r \equiv g} = \sum_r`, so in exact arithmetic every :math:`G` gives
    :math:`d\gamma = \sum_r dy_r \hat x_r` and :math:`d\beta = \sum_r dy_r`.

    In floating point, addition is not associative: different :math:`G` add the same numbers in different
    orders, and float32 results differ in the last bits. For one fixed :math:`G`, though, the order is fixed by
    the program (no program's result depends on when another finishes), so the bits are the same on every run. A
    single buffer updated with atomic adds has neither property.

    Parameters
    ----------
    dy, xhat : ndarray (M, N)
        Upstream gradient and normalised input (``layernorm.forward``'s cache holds ``xhat``).
    G : int, 1 <= G
        Number of stage-1 programs.

    Returns
    -------
    dgamma, dbeta : ndarray (N,)
        In ``dy``'s dtype.
    partial_dgamma, partial_dbeta : ndarray (G, N)
        The stage-1 buffers.
    """
    M, N = dy.shape
    partial_dgamma = np.zeros((G, N), dtype=dy.dtype)       # (G, N)
    partial_dbeta = np.zeros((G, N), dtype=dy.dtype)        # (G, N)
    for g in range(G):
        for r in range(g, M, G):                            # program g's rows, in the order it walks them
            partial_dgamma[g] += dy[r] * xhat[r]
            partial_dbeta[g] += dy[r]
    dgamma = np.zeros(N, dtype=dy.dtype)                    # (N,)
    dbeta = np.zeros(N, dtype=dy.dtype)                     # (N,)
    for g in range(G):                                      # stage 2, a fixed order
        dgamma += partial_dgamma[g]
        dbeta += partial_dbeta[g]
    return dgamma, dbeta, partial_dgamma, partial_dbeta


def gelu_tanh_grad(z):
    r"""Exercise 3: :math:`\phi'(z)` for :math:`\phi(z) = \tfrac12 z\,(1 + \tanh u)`,
    :math:`u = c\,(z + a z^3)`, :math:`c = \sqrt{2/\pi}`, :math:`a = 0.044715`.

    Product rule, then :math:`\tanh' = 1 - \tanh^2` and :math:`du/dz = c\,(1 + 3 a z^2)`:

    .. math::
        \phi'(z) = \tfrac12 (1 + t) + \tfrac12 z\,(1 - t^2)\, c\,(1 + 3 a z^2), \qquad t = \tanh u .

    The kernel's epilogue evaluates this at the stored :math:`Z` and multiplies the tile of :math:`dY W_2^\top` by
    it, so :math:`dH` is never written. (``_act_grad`` computes :math:`\tanh` as :math:`2\sigma(2u) - 1`, the same
    function.) For large :math:`|z|`, :math:`t \to \pm 1` and :math:`\phi' \to 1` or 0, like the ReLU's.

    Parameters
    ----------
    z : ndarray
        Pre-activations.

    Returns
    -------
    ndarray, like ``z``
    """
    c = math.sqrt(2.0 / math.pi)                            # Python floats: a float32 z stays float32
    a = 0.044715
    t = np.tanh(c * (z + a * z**3))
    return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * c * (1.0 + 3.0 * a * z * z)


def gelu_tanh_grad_vs_reference(z):
    """Exercise 3, checked: (gelu_tanh_grad(z), the reference's backward with upstream 1) for float64 ``z``."""
    _, cache = activations.gelu_forward(z, approximate="tanh")
    return gelu_tanh_grad(z), activations.gelu_backward(np.ones_like(z), cache)
