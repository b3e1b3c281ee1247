r"""Worked solutions to the exercises of chapter 6 ("The Transformer, equation by equation").

``tests/book/test_solutions_06.py`` runs every function here against ``reference/``, so the solutions stay right as the
reference changes. Each function answers one exercise; its docstring gives the reasoning.
"""
import numpy as np

from reference.ops import layernorm, positional, softmax


def softmax_jacobian(p):
    r"""Exercise 1: the full Jacobian of the softmax at output ``p`` (one row).

    From :math:`p_i = e^{s_i} / \sum_l e^{s_l}`:
    :math:`\partial p_i / \partial s_j = p_i \delta_{ij} - p_i p_j`, i.e. :math:`J = \operatorname{diag}(p) - p p^\top`.

    * It is symmetric, so :math:`J^\top g = J g = p \circ g - p\,(p \cdot g)`, which is ``softmax.backward``.
    * Each row sums to :math:`p_i - p_i \sum_j p_j = 0`: :math:`J \mathbf{1} = 0`, because adding a constant to
      every score changes no probability. So :math:`J` is singular (rank :math:`T - 1` when all :math:`p_i > 0`),
      and the gradient ``dS`` of every row sums to 0.

    Parameters
    ----------
    p : ndarray (T,)
        A softmax output (positive, summing to 1).

    Returns
    -------
    J : ndarray (T, T)
    """
    return np.diag(p) - np.outer(p, p)


def softmax_backward_via_jacobian(s, g):
    """Exercise 1, checked: (J^T g, softmax.backward(g)) for scores ``s`` (T,) and upstream ``g`` (T,)."""
    p, cache = softmax.forward(s)
    return softmax_jacobian(p).T @ g, softmax.backward(g, cache)


def pe_shift_matrix(d_model, k):
    r"""Exercise 2: the matrix :math:`R_k` with :math:`\text{PE}(pos + k) = \text{PE}(pos)\, R_k` for every ``pos``.

    Coordinates :math:`2i, 2i+1` hold :math:`(\sin pos\,\omega_i, \cos pos\,\omega_i)` with
    :math:`\omega_i = 10000^{-2i/d}`. The angle-sum formulas give

    .. math::
        \sin((pos+k)\omega) = \sin(pos\,\omega)\cos(k\omega) + \cos(pos\,\omega)\sin(k\omega), \\
        \cos((pos+k)\omega) = \cos(pos\,\omega)\cos(k\omega) - \sin(pos\,\omega)\sin(k\omega),

    so for the row vector :math:`[\sin, \cos]` the 2 x 2 block is
    :math:`\begin{bmatrix} \cos k\omega & -\sin k\omega \\ \sin k\omega & \cos k\omega \end{bmatrix}`: a rotation
    that depends on the offset :math:`k` only, not on :math:`pos`. A fixed linear map, so attention can learn to
    read relative positions.

    Parameters
    ----------
    d_model : int (even)
    k : int
        The offset.

    Returns
    -------
    R : ndarray (d_model, d_model), block diagonal
    """
    R = np.zeros((d_model, d_model))
    for i in range(d_model // 2):
        omega = 10000.0 ** (-2 * i / d_model)
        c, s = np.cos(k * omega), np.sin(k * omega)
        R[2 * i:2 * i + 2, 2 * i:2 * i + 2] = [[c, -s], [s, c]]
    return R


def pe_shift_error(n_positions, d_model, k):
    """Exercise 2, checked: max |PE(pos + k) - PE(pos) R_k| over pos = 0 .. n_positions - 1."""
    pe = positional.sinusoidal(n_positions + k, d_model)          # (n_positions + k, d_model)
    return np.abs(pe[k:] - pe[:n_positions] @ pe_shift_matrix(d_model, k)).max()


def layernorm_invariances(x, gamma, beta, dy, a=3.0, b=-2.0):
    r"""Exercise 3: what LayerNorm cannot see, and why its gradient has no component there.

    :math:`\hat x` is unchanged when a row is shifted (:math:`x + b\mathbf{1}`) or rescaled (:math:`a x`, a > 0;
    exactly so for :math:`\varepsilon = 0`, up to :math:`\varepsilon/\sigma^2` otherwise). The directional derivative
    along those directions is therefore 0, and so is the gradient's component along them: from
    :math:`dx = \frac{1}{s}(g - \bar g - \hat x\, \overline{g \hat x})`,

    .. math::
        \sum_j dx_j = \tfrac{1}{s}\big(C \bar g - C \bar g - \overline{g \hat x} \textstyle\sum_j \hat x_j\big) = 0,
        \qquad
        \sum_j dx_j \hat x_j = \tfrac{1}{s}\big(C\, \overline{g \hat x} - \bar g \textstyle\sum_j \hat x_j
        - \overline{g \hat x} \sum_j \hat x_j^2\big) = 0,

    using :math:`\sum_j \hat x_j = 0` and :math:`\sum_j \hat x_j^2 = C \sigma^2/(\sigma^2 + \varepsilon) \approx C`.
    (The second is exactly 0 only for :math:`\varepsilon = 0`; with :math:`\varepsilon` it is
    :math:`O(\varepsilon/\sigma^2)`.)

    Returns
    -------
    dict with ``shift_change`` and ``scale_change`` (max |LN(x + b) - LN(x)| and |LN(a x) - LN(x)|),
    ``row_sums`` (B, ...) the sums of dx over each row, and ``row_dots`` the dots of dx with xhat per row.
    """
    y, cache = layernorm.forward(x, gamma, beta)
    dx, _, _ = layernorm.backward(dy, cache)
    xhat = (y - beta) / gamma                                     # (..., C) recovered from the output
    return {"shift_change": np.abs(layernorm.forward(x + b, gamma, beta)[0] - y).max(),
            "scale_change": np.abs(layernorm.forward(a * x, gamma, beta)[0] - y).max(),
            "row_sums": dx.sum(axis=-1), "row_dots": (dx * xhat).sum(axis=-1)}
