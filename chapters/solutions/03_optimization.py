r"""Worked solutions to the exercises of chapter 3 ("Model optimization").

``tests/book/test_solutions_03.py`` runs every function here against ``reference/``, so the solutions stay right as the
reference changes. Each function answers one exercise; its docstring gives the reasoning.
"""
import numpy as np


def quantized_bytes(K, N, bits, group_size=None, scale_bytes=4):
    r"""Exercise 1: bytes of a symmetric ``bits``-bit ``(K, N)`` matrix, as ``QuantizedTensor.nbytes`` counts them.

    Codes: ``bits <= 4`` are packed two per byte, :math:`\lceil KN/2 \rceil` bytes; 5..8 bits take a byte each.
    Scales: one float per block. With ``group_size=g`` (groups along the last axis) there are :math:`KN/g` blocks;
    with ``group_size=None`` one scale per output column (``axis=1``), :math:`N` blocks of :math:`K` weights.
    So for 4-bit groups the cost per weight is :math:`4 + 8\,\text{scale\_bytes}/g` bits: ``4 + 32/g`` with float32
    scales (5 bits at g = 32, 4.25 at g = 128), and int8 per column costs :math:`8 + 32/K` (8.25 for K = 128).

    Returns
    -------
    (nbytes, bits_per_weight)
    """
    n = K * N
    code_bytes = (n + 1) // 2 if bits <= 4 else n
    n_scales = n // group_size if group_size is not None else N
    nbytes = code_bytes + n_scales * scale_bytes
    return nbytes, 8 * nbytes / n


def csr_bytes(mask, value_bytes=4, index_bytes=4):
    r"""Exercise 2: bytes of a ``(K, N)`` matrix with nonzeros where ``mask`` is True, stored as CSR.

    One value and one column index per nonzero, and :math:`K + 1` row pointers (of ``index_bytes`` each):
    :math:`\text{nnz}\,(b_v + b_i) + (K + 1)\,b_i`.
    """
    K = mask.shape[0]
    return int(mask.sum()) * (value_bytes + index_bytes) + (K + 1) * index_bytes


def csr_break_even(value_bytes=4, index_bytes=4):
    r"""Exercise 2: the sparsity above which CSR is smaller than the dense array (row pointers neglected).

    With density :math:`d = 1 - s`: :math:`d\,KN\,(b_v + b_i) < KN\,b_v \iff s > b_i / (b_v + b_i)`.
    float32 values with int32 indices: :math:`s > 1/2`; with int16 indices: :math:`s > 1/3`.
    """
    return index_bytes / (value_bytes + index_bytes)


def bitmask_break_even(value_bytes=4):
    r"""Exercise 2: the same with a bitmask (1 bit per position) and the kept values packed.

    :math:`KN/8 + (1 - s)\,KN\,b_v < KN\,b_v \iff s > 1 / (8\,b_v)`: 1/32 for float32 values.
    """
    return 1.0 / (8 * value_bytes)


def logit_matching_grad(zs, zt):
    r"""Exercise 3: the :math:`T \to \infty` limit of the soft term's gradient, per position (not divided by N).

    For large :math:`T`, :math:`e^{z/T} = 1 + z/T + O(T^{-2})`, so
    :math:`\mathrm{softmax}(z/T)_v = \frac{1 + z_v/T}{V + \sum_w z_w/T} + O(T^{-2})
    = \frac{1}{V}\big(1 + (z_v - \bar z)/T\big) + O(T^{-2})`. The soft term's gradient is
    :math:`T\,(p^s - p^t)` (module docstring of ``reference/compression/distill.py``), hence

    .. math:: T\,(p^s - p^t) = \frac{1}{V}\big((z^s - \bar z^s) - (z^t - \bar z^t)\big) + O(1/T),

    the gradient of :math:`\frac{1}{2V}\|(z^s - \bar z^s) - (z^t - \bar z^t)\|^2`: matching the centred logits.

    Parameters
    ----------
    zs, zt : (..., V) student and teacher logits

    Returns
    -------
    (..., V) array
    """
    V = zs.shape[-1]
    return ((zs - zs.mean(axis=-1, keepdims=True)) - (zt - zt.mean(axis=-1, keepdims=True))) / V
