r"""Integer quantization of weights: int8 / int4, symmetric and asymmetric, per tensor, per channel and per group.

A float tensor :math:`W` is stored as integer codes :math:`q`, a scale :math:`s > 0` and (asymmetric only) an
integer zero point :math:`z`, shared by a block of elements (the whole tensor, one channel, or one group):

.. math::

    \text{symmetric:}\quad s = \frac{\max|W|}{q_{\max}},\ q = \operatorname{clamp}\!\big(\operatorname{rint}(W/s),
    -q_{\max}, q_{\max}\big),\ \hat W = s\,q, \qquad q_{\max} = 2^{b-1} - 1,

.. math::

    \text{asymmetric:}\quad s = \frac{\max(W, 0) - \min(W, 0)}{2^b - 1},\ z = \operatorname{rint}(-\min(W, 0)/s),\
    q = \operatorname{clamp}\!\big(\operatorname{rint}(W/s) + z, 0, 2^b - 1\big),\ \hat W = s\,(q - z).

Conventions, all deliberate:

- **Rounding** is ``np.rint``: round half to even (2.5 -> 2, 3.5 -> 4), so ties do not bias the codes up
  (``floor(x + 0.5)``) or away from 0 (``np.round`` in C). Inside the range every element then satisfies
  :math:`|W - \hat W| \le s/2`, up to float rounding.
- **Symmetric codes use** :math:`[-(2^{b-1}-1),\ 2^{b-1}-1]` **, not** :math:`-2^{b-1}`: the grid is then symmetric
  about 0 (the max-abs element maps to :math:`\pm q_{\max}` whatever its sign, and :math:`-q` is always a code), and
  no product of two int8 codes exceeds :math:`127^2` in size, the bound :func:`int_matmul` uses to rule out int32
  overflow; :math:`(-128)^2 = 16384` would be the only larger one. One code of 256 is given up for this.
- **Asymmetric** ranges always contain 0 (min and max are taken with 0), so :math:`z` is a valid code and a zero
  weight (or padding) dequantizes to exactly 0.
- **All-zero blocks** (range 0) get the scale 1 and codes 0: no division by zero, and they dequantize to exact zeros.
- **Storage.** Codes are kept one per byte: ``int8`` for symmetric, ``uint8`` for asymmetric (``[0, 255]`` does not
  fit int8). For ``bits <= 4`` the stored form is packed, two 4-bit codes per ``uint8`` (:func:`pack` /
  :func:`unpack`; 2- and 3-bit codes also take a nibble); for 5..7 bits a code takes a byte, so they save no memory
  over int8 here and only show the accuracy. Scales are kept in the weight's float dtype, zero points as ``uint8``;
  :attr:`QuantizedTensor.nbytes` counts exactly these.

Where the scale lives is chosen by ``axis`` and ``group_size``: ``axis=None`` one scale for the tensor; ``axis=k``
one scale per index along axis ``k`` (per channel: for ``y = x W`` with ``W`` (d_in, d_out), ``axis=1`` gives one
scale per output column); ``group_size=g`` one scale per run of ``g`` consecutive elements along the last axis
(for ``W`` (d_in, d_out) that is along d_out; quantize ``W.T`` for groups along the reduction axis d_in, the layout
of GPTQ/AWQ's (out, in) weights). ``clip`` narrows the range the scale is fitted to (a percentile or a fixed
``(lo, hi)``); weights outside it are clamped to the edge codes. Weights must be finite and at most a quarter of
the dtype's maximum, so that no step of the computation overflows.

Fake quantization (:func:`fake_quant_forward`) returns :math:`\hat W` in float for quantization-aware training; its
backward is the straight-through estimator: see :func:`fake_quant_backward`.
"""
from dataclasses import dataclass

import numpy as np

from reference._checks import check_float, check_int
from reference.tree import flatten, unflatten

INT32_MAX = np.iinfo(np.int32).max
K_MAX = INT32_MAX // (127 * 127)                # 133144: the longest int8 dot product int32 holds for sure


def _qrange(bits, symmetric):
    """The code range ``(q_min, q_max)`` of ``bits``-bit codes."""
    if symmetric:
        return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1


def _check_W(W):
    """A float32/float64 ndarray with at least one element, all finite and at most a quarter of the dtype maximum."""
    if isinstance(W, np.ndarray) and np.issubdtype(W.dtype, np.complexfloating):
        raise TypeError(f"W: expected real float32 or float64 weights, got complex dtype {W.dtype}")
    if isinstance(W, np.ndarray) and W.dtype == np.float16:    # check_float lets float16 through (mixed precision)
        raise TypeError("W: expected dtype float32 or float64, got float16")
    check_float("W", W)
    if W.size == 0:
        raise ValueError(f"W: expected at least one element to quantize, got shape {W.shape}")
    bad = ~np.isfinite(W)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"W: expected finite weights, got {int(bad.sum())} NaN/inf value(s), the first "
                         f"{W[where]} at index {where}")
    limit = np.finfo(W.dtype).max / 4
    if np.abs(W).max() > limit:
        raise ValueError(f"W: expected |W| <= {limit:.4g} (a quarter of the {W.dtype} maximum, so that the grid "
                         f"s * q cannot overflow), got max |W| = {np.abs(W).max():.4g}")


def _check_options(W, bits, symmetric, axis, group_size, clip):
    """Validate the quantizer's options against ``W``; return ``axis`` made non-negative (or None)."""
    if isinstance(bits, (bool, np.bool_)) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"bits: expected an int in 2..8, got {type(bits).__name__}")
    if not 2 <= bits <= 8:
        raise ValueError(f"bits: expected an int in 2..8, got {bits}")
    if not isinstance(symmetric, (bool, np.bool_)):
        raise TypeError(f"symmetric: expected True or False, got {type(symmetric).__name__}")
    if axis is not None:
        if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"axis: expected None or an int, got {type(axis).__name__}")
        if not -W.ndim <= axis < W.ndim:
            raise ValueError(f"axis: expected None or an int in [{-W.ndim}, {W.ndim - 1}] for W of shape {W.shape}, "
                             f"got {axis}")
        axis = int(axis) % W.ndim
    if group_size is not None:
        if isinstance(group_size, (bool, np.bool_)) or not isinstance(group_size, (int, np.integer)):
            raise TypeError(f"group_size: expected None or a positive int, got {type(group_size).__name__}")
        if axis is not None:
            raise ValueError(f"group_size and axis: expected one of them (groups run along the last axis), "
                             f"got axis={axis} and group_size={group_size}")
        if W.ndim == 0:
            raise ValueError("group_size: expected W with at least one axis to group along, got a 0-d array")
        n = W.shape[-1]
        if group_size < 1 or n % group_size != 0:
            raise ValueError(f"group_size: expected a positive divisor of the last dimension {n} of W "
                             f"(shape {W.shape}), got {group_size}")
    if clip is None:
        return axis
    if isinstance(clip, tuple):
        if len(clip) != 2 or not all(isinstance(c, (int, float, np.integer, np.floating))
                                     and not isinstance(c, (bool, np.bool_)) for c in clip):
            raise TypeError(f"clip: expected (lo, hi), two real numbers, got {clip!r}")
        lo, hi = clip
        if not (np.isfinite(lo) and np.isfinite(hi) and lo <= 0 <= hi and lo < hi):
            raise ValueError(f"clip: expected a finite range with lo <= 0 <= hi and lo < hi, got {clip!r}")
        if symmetric and lo != -hi:
            raise ValueError(f"clip: symmetric quantization expected a range (-a, a), got {clip!r}; pass "
                             f"symmetric=False for a range that is not symmetric about 0")
        return axis
    if isinstance(clip, (bool, np.bool_)) or not isinstance(clip, (int, float, np.integer, np.floating)):
        raise TypeError(f"clip: expected None, a percentile in (0, 100] or a (lo, hi) tuple, "
                        f"got {type(clip).__name__}")
    if not 0 < clip <= 100:
        raise ValueError(f"clip: expected a percentile in (0, 100], got {clip}")
    return axis


def _view(W, axis, group_size):
    """``W`` reshaped so one scale covers each slice along ``reduce``: returns ``(W_view, reduce_axes)``."""
    if group_size is not None:
        Wv = W.reshape(W.shape[:-1] + (W.shape[-1] // group_size, group_size))   # (..., n / g, g)
        return Wv, (Wv.ndim - 1,)
    if axis is None:
        return W, tuple(range(W.ndim))
    return W, tuple(a for a in range(W.ndim) if a != axis)


def _quantize_view(Wv, reduce, bits, symmetric, clip):
    r"""Quantize a view block by block.

    Returns ``(codes, scale, zero_point, lo, hi)``: codes in ``Wv``'s shape; ``scale``, ``zero_point`` (None if
    symmetric) and the clipping range ``[lo, hi]`` the scale was fitted to (``[-a, a]`` symmetric, ``[min(W, 0),
    max(W, 0)]`` asymmetric, or what ``clip`` set), in ``Wv``'s shape with the ``reduce`` axes kept as size 1.
    """
    q_min, q_max = _qrange(bits, symmetric)
    dt = Wv.dtype
    if symmetric:
        if clip is None:
            a = np.abs(Wv).max(axis=reduce, keepdims=True)                                   # block max |W|
        elif isinstance(clip, tuple):
            a = np.full([1 if i in reduce else n for i, n in enumerate(Wv.shape)], clip[1], dtype=dt)
        else:
            a = np.percentile(np.abs(Wv), clip, axis=reduce, keepdims=True).astype(dt)
        live = a > 0
        s = np.where(live, a / dt.type(q_max), dt.type(1))                                  # s = max|W| / q_max
        live &= s > 0                           # a subnormal max|W| whose s underflows to 0 counts as range 0
        s = np.where(live, s, dt.type(1))
        codes = np.clip(np.rint(Wv / s), q_min, q_max)                                      # q = clamp(rint(W/s))
        codes = np.where(live, codes, 0).astype(np.int8)
        z = None
        lo, hi = -a, a
    else:
        if clip is None:
            w_lo = np.minimum(Wv.min(axis=reduce, keepdims=True), 0)                          # min(W, 0)
            w_hi = np.maximum(Wv.max(axis=reduce, keepdims=True), 0)                          # max(W, 0)
        elif isinstance(clip, tuple):
            shape = [1 if i in reduce else n for i, n in enumerate(Wv.shape)]
            w_lo, w_hi = np.full(shape, clip[0], dtype=dt), np.full(shape, clip[1], dtype=dt)
        else:
            w_lo = np.minimum(np.percentile(Wv, 100 - clip, axis=reduce, keepdims=True), 0).astype(dt)
            w_hi = np.maximum(np.percentile(Wv, clip, axis=reduce, keepdims=True), 0).astype(dt)
        s = w_hi / dt.type(q_max) - w_lo / dt.type(q_max)      # (hi - lo) / q_max, without overflowing hi - lo
        live = s > 0
        s = np.where(live, s, dt.type(1))
        z = np.where(live, np.clip(np.rint(-w_lo / s), q_min, q_max), 0)                   # z = rint(-lo / s)
        codes = np.clip(np.rint(Wv / s) + z, q_min, q_max)                                  # q = clamp(rint(W/s) + z)
        codes = np.where(live, codes, 0).astype(np.uint8)
        z = z.astype(np.uint8)
        lo, hi = w_lo, w_hi
    return codes, s.astype(dt), z, lo, hi


@dataclass(frozen=True, eq=False)
class QuantizedTensor:
    """A tensor as integer codes plus scales (and zero points): the output of :func:`quantize`.

    Attributes
    ----------
    codes : ndarray, ``shape``, int8 (symmetric, in ``[-(2^(b-1)-1), 2^(b-1)-1]``) or uint8 (asymmetric, in
        ``[0, 2^b - 1]``), one code per byte; :meth:`packed` gives the stored form for ``bits <= 4``.
    scale : ndarray of ``dtype``, one per block, in the blocked shape (the reduced axes kept as size 1; for groups
        ``shape[:-1] + (shape[-1] // group_size, 1)``).
    zero_point : ndarray of uint8 shaped like ``scale``, or None when symmetric.
    bits, symmetric, axis, group_size : the options it was made with (``axis`` non-negative or None).
    shape : tuple, dtype : numpy dtype of the original float tensor.
    """

    codes: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray | None
    bits: int
    symmetric: bool
    axis: int | None
    group_size: int | None
    shape: tuple
    dtype: np.dtype

    def _blocked(self, a):
        """``a`` (in ``shape``) reshaped to the blocked layout of ``scale``."""
        if self.group_size is None:
            return a
        return a.reshape(self.shape[:-1] + (self.shape[-1] // self.group_size, self.group_size))

    def dequantize(self):
        r""":math:`\hat W = s\,(q - z)`, in the original shape and dtype."""
        q = self._blocked(self.codes).astype(self.dtype)                    # blocked shape
        if self.zero_point is not None:
            q = q - self.zero_point.astype(self.dtype)
        return (q * self.scale).reshape(self.shape)

    def elementwise_scale(self):
        """The scale that applies to each element, broadcast to ``shape`` (the step of the grid at that element)."""
        s = np.broadcast_to(self.scale, self._blocked(self.codes).shape)
        return np.ascontiguousarray(s).reshape(self.shape)

    def packed(self):
        """The stored codes for ``bits <= 4``: two 4-bit codes per uint8, see :func:`pack`."""
        if self.bits > 4:
            raise ValueError(f"packed: expected bits <= 4 (two codes per byte), got bits={self.bits}")
        return pack(self.codes)

    @property
    def nbytes(self):
        """Bytes of the stored form: codes (packed when ``bits <= 4``), scales, zero points."""
        n = self.codes.size
        code_bytes = (n + 1) // 2 if self.bits <= 4 else n
        return code_bytes + self.scale.nbytes + (0 if self.zero_point is None else self.zero_point.nbytes)

    @property
    def float_nbytes(self):
        """Bytes of the original float tensor."""
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


def quantize(W, bits=8, symmetric=True, axis=None, group_size=None, clip=None):
    r"""Quantize ``W`` to ``bits``-bit integer codes with a scale per tensor, per channel or per group.

    Parameters
    ----------
    W : ndarray (...), float32 or float64, finite, at least one element
    bits : int in 2..8
    symmetric : bool
        True: codes in :math:`[-(2^{b-1}-1), 2^{b-1}-1]`, no zero point. False: codes in :math:`[0, 2^b - 1]` with
        an integer zero point.
    axis : int or None
        None: one scale for the tensor. ``k``: one scale per index of axis ``k`` (per channel).
    group_size : int or None
        One scale per ``group_size`` consecutive elements of the last axis; must divide ``W.shape[-1]``; not with
        ``axis``.
    clip : None, float in (0, 100], or (lo, hi)
        The range the grid covers, per block. None: the block's max-abs (symmetric) or [min, max] with 0 (asymmetric),
        so nothing is clipped. A float ``p``: the p-th percentile of ``|W|`` (symmetric) or the ``100 - p`` and
        ``p`` percentiles of ``W`` (asymmetric), so the largest values are clipped. ``(lo, hi)``: a fixed range
        (``lo <= 0 <= hi``; symmetric needs ``lo == -hi``).

    Returns
    -------
    QuantizedTensor
        ``.dequantize()`` gives :math:`\hat W` (``W.shape``, ``W.dtype``) with :math:`|W - \hat W| \le s/2` inside
        the range.
    """
    _check_W(W)
    axis = _check_options(W, bits, symmetric, axis, group_size, clip)
    Wv, reduce = _view(W, axis, group_size)
    codes, s, z, _, _ = _quantize_view(Wv, reduce, bits, symmetric, clip)
    return QuantizedTensor(codes=codes.reshape(W.shape), scale=s, zero_point=z, bits=int(bits),
                           symmetric=bool(symmetric), axis=axis,
                           group_size=None if group_size is None else int(group_size), shape=W.shape, dtype=W.dtype)


def pack(codes):
    """Two 4-bit codes per byte: element ``2i`` in the low nibble of byte ``i``, element ``2i + 1`` in the high one.

    Parameters
    ----------
    codes : ndarray, int8 in [-8, 7] (two's complement nibbles) or uint8 in [0, 15], any shape (read flat, C order)

    Returns
    -------
    ndarray (ceil(n / 2),) uint8, n = ``codes.size``; for odd n the last high nibble is 0.
    """
    check_int("codes", codes)
    if codes.dtype == np.int8:
        lo_ok, hi_ok = -8, 7
    elif codes.dtype == np.uint8:
        lo_ok, hi_ok = 0, 15
    else:
        raise TypeError(f"codes: expected int8 (signed 4-bit) or uint8 (unsigned 4-bit) codes, got {codes.dtype}")
    flat = codes.reshape(-1)                                                    # (n,)
    if flat.size and (flat.min() < lo_ok or flat.max() > hi_ok):
        raise ValueError(f"codes: expected {codes.dtype} values in [{lo_ok}, {hi_ok}] to fit 4 bits, got values in "
                         f"[{flat.min()}, {flat.max()}]")
    nib = flat.astype(np.uint8) & np.uint8(0x0F)          # int8 -> uint8 wraps: -1 -> 0xFF -> 0x0F
    if nib.size % 2:
        nib = np.append(nib, np.uint8(0))                                       # (n + 1,)
    return nib[0::2] | (nib[1::2] << np.uint8(4))                               # (ceil(n / 2),)


def unpack(packed, n, signed):
    """Inverse of :func:`pack`: ``n`` codes, int8 in [-8, 7] if ``signed`` (nibble sign-extended) else uint8 in [0, 15].

    Parameters
    ----------
    packed : ndarray (m,) uint8, with m = ceil(n / 2)
    n : int, the number of codes
    signed : bool
    """
    if not isinstance(packed, np.ndarray) or packed.dtype != np.uint8 or packed.ndim != 1:
        got = f"{packed.dtype} array of shape {packed.shape}" if isinstance(packed, np.ndarray) \
            else type(packed).__name__
        raise TypeError(f"packed: expected a 1-D uint8 array, got {got}")
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or (n + 1) // 2 != packed.size:
        raise ValueError(f"n: expected an int with ceil(n / 2) == packed.size == {packed.size}, got {n!r}")
    nib = np.empty(2 * packed.size, dtype=np.uint8)                              # (2m,)
    nib[0::2] = packed & np.uint8(0x0F)
    nib[1::2] = packed >> np.uint8(4)
    nib = nib[:n]
    if not signed:
        return nib
    return np.where(nib >= 8, nib.astype(np.int16) - 16, nib).astype(np.int8)   # two's complement of a nibble


def int_matmul(a_codes, b_codes):
    r"""Integer matmul ``a @ b`` of int8 codes, accumulated in int32.

    Every product has :math:`|a_{ik} b_{kj}| \le 127^2` (codes in [-127, 127], see the module docstring), so a sum
    of ``K`` of them stays within int32 whenever :math:`K \cdot 127^2 \le 2^{31} - 1`, i.e. ``K <= K_MAX = 133144``.
    Longer inner dimensions are refused, so the int32 result is exactly the integer one (no wrap-around).

    Parameters
    ----------
    a_codes : ndarray (M, K) int8 in [-127, 127]
    b_codes : ndarray (K, N) int8 in [-127, 127]

    Returns
    -------
    ndarray (M, N) int32
    """
    for name, c in (("a_codes", a_codes), ("b_codes", b_codes)):
        if not isinstance(c, np.ndarray) or c.dtype != np.int8:
            got = c.dtype if isinstance(c, np.ndarray) else type(c).__name__
            raise TypeError(f"{name}: expected an int8 numpy.ndarray of codes, got {got}")
        if c.ndim != 2:
            raise ValueError(f"{name}: expected a 2-D array, got shape {c.shape}")
        if c.size and c.min() == -128:
            raise ValueError(f"{name}: expected codes in [-127, 127] (symmetric int8), got -128")
    if a_codes.shape[1] != b_codes.shape[0]:
        raise ValueError(f"expected a_codes (M, K) and b_codes (K, N) with the same K, got {a_codes.shape} and "
                         f"{b_codes.shape}")
    K = a_codes.shape[1]
    if K > K_MAX:
        raise ValueError(f"K = {K}: expected K <= {K_MAX}, since K * 127 * 127 = {K * 127 * 127} could exceed the "
                         f"int32 maximum {INT32_MAX}")
    return a_codes.astype(np.int32) @ b_codes.astype(np.int32)                  # (M, N), int32 sums


def quantized_matmul(x_q, W_q):
    r"""``x W`` from two symmetric quantized operands: :math:`s_x s_W \sum_k q_{x,ik} q_{W,kj}`, the sum in int32.

    The scales must be constant along the inner axis ``K`` so they factor out of the sum: ``x_q`` per tensor or
    per row (``axis=0``), ``W_q`` per tensor or per column (``axis=1``); no groups, no zero points.

    Parameters
    ----------
    x_q : QuantizedTensor of shape (M, K)
    W_q : QuantizedTensor of shape (K, N), same float dtype

    Returns
    -------
    ndarray (M, N) of their float dtype
    """
    for name, q, ok_axis in (("x_q", x_q, 0), ("W_q", W_q, 1)):
        if not isinstance(q, QuantizedTensor):
            raise TypeError(f"{name}: expected a QuantizedTensor, got {type(q).__name__}")
        if len(q.shape) != 2:
            raise ValueError(f"{name}: expected a 2-D quantized tensor, got shape {q.shape}")
        if not q.symmetric or q.group_size is not None or q.axis not in (None, ok_axis):
            raise ValueError(f"{name}: expected symmetric codes with one scale per tensor or axis={ok_axis} (constant "
                             f"along K), got symmetric={q.symmetric}, axis={q.axis}, group_size={q.group_size}")
    if x_q.dtype != W_q.dtype:
        raise TypeError(f"expected x_q and W_q of one float dtype, got {x_q.dtype} and {W_q.dtype}")
    acc = int_matmul(x_q.codes, W_q.codes)                                      # (M, N) int32
    return acc.astype(x_q.dtype) * x_q.scale * W_q.scale                        # (M, 1) or (1, 1) times (1, N)


def linear_int8(x, W_q, b=None):
    r"""``y = x W + b`` with int8 activations quantized per row on the fly and an integer matmul.

    Each row of ``x`` gets its own symmetric int8 scale :math:`s_{x,i} = \max_k |x_{ik}| / 127` (dynamic
    quantization: computed from this input, nothing calibrated). With :math:`\hat x, \hat W` the dequantized
    operands, :math:`|x_{ik} - \hat x_{ik}| \le s_{x,i}/2` and :math:`|W_{kj} - \hat W_{kj}| \le s_{W,j}/2`, so

    .. math::

        |(xW)_{ij} - y_{ij}| \le \frac{s_{x,i}}{2} \sum_k |W_{kj}| + \frac{s_{W,j}}{2} \sum_k |x_{ik}|
        + K \frac{s_{x,i} s_{W,j}}{4}

    up to the float rounding of the final rescale.

    Parameters
    ----------
    x : ndarray (..., K), float32 or float64
    W_q : QuantizedTensor (K, N) from ``quantize(W, 8, symmetric=True, axis=None or 1)`` (any bits; codes fit int8)
    b : ndarray (N,) or None

    Returns
    -------
    y : ndarray (..., N), ``x.dtype``
    """
    check_float("x", x, ndim_min=1)
    if not isinstance(W_q, QuantizedTensor):
        raise TypeError(f"W_q: expected a QuantizedTensor, got {type(W_q).__name__}")
    if len(W_q.shape) != 2 or W_q.shape[0] != x.shape[-1]:
        raise ValueError(f"W_q: expected shape ({x.shape[-1]}, N) to match x of shape {x.shape}, got {W_q.shape}")
    if W_q.dtype != x.dtype:
        raise TypeError(f"expected x and W_q of one float dtype, got {x.dtype} and {W_q.dtype}")
    K, N = W_q.shape
    x2 = x.reshape(-1, K)                                                       # (M, K)
    x_q = quantize(x2, bits=8, symmetric=True, axis=0)
    y = quantized_matmul(x_q, W_q)                                              # (M, N)
    if b is not None:
        check_float("b", b)
        if b.shape != (N,) or b.dtype != x.dtype:
            raise ValueError(f"b: expected shape ({N},) and dtype {x.dtype}, got {b.shape} {b.dtype}")
        y = y + b
    return y.reshape(x.shape[:-1] + (N,))


def fake_quant_forward(W, bits=8, symmetric=True, axis=None, group_size=None, clip=None):
    r"""Quantize-dequantize in float: :math:`\hat W = \mathrm{deq}(\mathrm{q}(W))`, for quantization-aware training.

    Same options as :func:`quantize`. The scale is computed from ``W`` (or ``clip``) and then treated as a constant:
    no gradient flows into it (LSQ-style learned scales are not covered).

    Returns
    -------
    W_hat : ndarray, ``W.shape``, ``W.dtype``
    cache : tuple ``(inside,)``, ``inside`` a bool array (``W.shape``): ``lo <= W <= hi`` for the block's clipping
        range, the range the scale was fitted to: ``[-max|W|, max|W|]`` symmetric, ``[min(W, 0), max(W, 0)]``
        asymmetric (so with ``clip=None`` every weight is inside), or the percentile / explicit range of ``clip``.
    """
    _check_W(W)
    axis = _check_options(W, bits, symmetric, axis, group_size, clip)
    Wv, reduce = _view(W, axis, group_size)
    codes, s, z, lo, hi = _quantize_view(Wv, reduce, bits, symmetric, clip)
    q = codes.astype(W.dtype)
    if z is not None:
        q = q - z.astype(W.dtype)
    W_hat = (q * s).reshape(W.shape)                                            # W_hat = s (q - z)
    inside = ((Wv >= lo) & (Wv <= hi)).reshape(W.shape)
    return W_hat, (inside,)


def fake_quant_backward(dW_hat, cache):
    r"""Straight-through estimator: :math:`dW = dW_{\hat{}} \cdot \mathbb 1[lo \le W \le hi]`.

    The true derivative of ``rint`` is 0 almost everywhere, which would stop all learning. The STE replaces the
    quantizer by the surrogate :math:`\operatorname{clip}(W, lo, hi)` in the backward pass (the "clipped" STE of
    Bengio et al. 2013; TensorFlow's ``fake_quant_with_min_max_vars`` does the same with its nudged range): the
    gradient passes unchanged inside the clipping range and is 0 outside, where the output is stuck near the range's
    edge. ``[lo, hi]`` is the range the scale was fitted to, not the nudged grid ``[s(q_min - z), s(q_max - z)]``,
    which can miss an extreme weight by up to :math:`s/2` (the zero point is rounded, and ``a / q_max * q_max`` may
    round below ``a``). With ``clip=None`` the range covers every weight, so the gradient passes everywhere; a
    percentile or an explicit ``clip`` makes the 0 branch real.

    Parameters
    ----------
    dW_hat : ndarray, the shape of ``W``, float32 or float64
    cache : from :func:`fake_quant_forward`

    Returns
    -------
    dW : ndarray, like ``dW_hat``
    """
    (inside,) = cache
    check_float("dW_hat", dW_hat)
    if dW_hat.shape != inside.shape:
        raise ValueError(f"dW_hat: expected shape {inside.shape}, got {dW_hat.shape}")
    # forward: W_hat = s (clamp(rint(W / s) + z, q_min, q_max) - z)   ~   clip(W, lo, hi) in the backward
    return np.where(inside, dW_hat, dW_hat.dtype.type(0))


_EMBEDDINGS = ("wte", "wpe", "wtype")


def is_embedding(name):
    """True for embedding tables: ``wte``, ``wpe`` and BERT's ``wtype`` (the Transformer's ``wte_src``, ``wte_tgt``)."""
    return name.split(".")[-1].startswith(_EMBEDDINGS)


def default_predicate(name, W):
    """Quantize the 2-D weight matrices, not embeddings, biases or LayerNorm parameters."""
    return W.ndim == 2 and not is_embedding(name)


def quantize_params(params, bits=8, symmetric=True, axis=None, group_size=None, clip=None, predicate=None):
    r"""Weight-only quantize-dequantize of a nested param tree (GPT, BERT): the floats a quantized model computes with.

    Parameters
    ----------
    params : nested dicts / lists of float ndarrays
    bits, symmetric, axis, group_size, clip : as in :func:`quantize`, for every selected tensor
    predicate : callable ``(name, W) -> bool`` or None
        Which tensors to quantize, by dotted name (``"blocks.0.attn.Wq"``, ``"blocks.3.ffn.W1"``); default
        :func:`default_predicate` (2-D matrices except embeddings; pass ``lambda n, W: W.ndim == 2`` to include them).

    Returns
    -------
    new_params : same nesting; selected tensors replaced by :math:`\hat W` (same dtype), the others copied
    report : dict
        ``"tensors"``: ``{name: {"shape", "bytes_before", "bytes_after", "rel_error"}}`` for each quantized tensor,
        ``rel_error`` = :math:`\|W - \hat W\|_F / \|W\|_F` (0 for an all-zero W);
        ``"bytes_before"``, ``"bytes_after"``: the whole tree, unquantized tensors counted at their float size.
    """
    predicate = default_predicate if predicate is None else predicate
    flat = flatten(params)
    new, tensors = {}, {}
    before = after = 0
    for name, W in flat.items():
        check_float(name, W)
        before += W.nbytes
        if not predicate(name, W):
            new[name] = W.copy()
            after += W.nbytes
            continue
        q = quantize(W, bits=bits, symmetric=symmetric, axis=axis, group_size=group_size, clip=clip)
        W_hat = q.dequantize()
        new[name] = W_hat
        after += q.nbytes
        norm = float(np.linalg.norm(W))
        err = float(np.linalg.norm(W - W_hat))
        tensors[name] = {"shape": W.shape, "bytes_before": W.nbytes, "bytes_after": q.nbytes,
                         "rel_error": err / norm if norm > 0 else 0.0}
    return unflatten(new), {"tensors": tensors, "bytes_before": before, "bytes_after": after}


def layer_errors(params, evaluate, bits=8, symmetric=True, axis=None, group_size=None, clip=None, predicate=None):
    """The effect of quantizing one tensor at a time: which layers hurt most.

    Parameters
    ----------
    params : nested param tree
    evaluate : callable ``params -> float`` (a validation loss, 1 - cosine to the float model, ...)
    bits, symmetric, axis, group_size, clip, predicate : as in :func:`quantize_params`

    Returns
    -------
    dict ``{name: evaluate(params with only that tensor quantized)}`` over the tensors ``predicate`` selects, in the
    tree's order.
    """
    predicate = default_predicate if predicate is None else predicate
    out = {}
    for name, W in flatten(params).items():
        if not predicate(name, W):
            continue
        one, _ = quantize_params(params, bits, symmetric, axis, group_size, clip,
                                 predicate=lambda n, A, target=name: n == target)
        out[name] = float(evaluate(one))
    return out
