r"""Element-wise activations: ReLU and GELU (exact erf form and tanh approximation), with backward passes.

.. math::

    \mathrm{ReLU}(x) = \max(x, 0), \qquad
    \mathrm{GELU}(x) = x\,\Phi(x) = \tfrac{x}{2}\left(1 + \operatorname{erf}(x/\sqrt{2})\right),

    \mathrm{GELU}_{\tanh}(x) = \tfrac{x}{2}\left(1 + \tanh\!\left(\sqrt{2/\pi}\,(x + 0.044715\,x^3)\right)\right).

NumPy has no ``erf``. Calling ``math.erf`` element by element is exact but takes about a second per 8M elements,
so :func:`_normal_cdf` evaluates :math:`\Phi` from a polynomial that interpolates (at Chebyshev points) the scaled
complementary error function :math:`R(z) = \operatorname{erfc}(z)\,e^{z^2}`; its coefficients are computed once,
at import, from ``math.erfc`` itself. Its absolute error is about 2e-15 in float64 (1e-9 with the float32
coefficients, well below float32's own rounding), and
because :math:`\Phi(-|x|) = \tfrac12 e^{-x^2/2} R(|x|/\sqrt2)` is never formed as ``1 - something`` for negative
:math:`x`, the left tail keeps its relative accuracy too.

The derivative at 0 of ReLU is taken as 0, as PyTorch does.
"""
import math

import numpy as np

from reference._checks import check_float, check_same_dtype, check_shape

GELU_TANH_COEF = 0.044715
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

# R(z) = erfc(z) exp(z^2) decreases smoothly from 1 (z = 0) to ~1/(z sqrt(pi)). With u = (z - K) / (z + K) it is a
# smooth function of u on [-1, u_max], where a degree-20 polynomial (interpolating at Chebyshev points) reaches
# ~1e-15 and degree 10 ~1e-9. In the power basis its coefficients sum to ~1.002 in absolute value, so Horner's
# rule loses nothing. Beyond Z_MAX, exp(-z^2) underflows float64, so clipping z there changes nothing.
_K = 3.0
_Z_MAX = 26.0
_U_MAX = (_Z_MAX - _K) / (_Z_MAX + _K)
_CHUNK = 1 << 15                     # elements per pass: the temporaries of one chunk stay in cache


def _scaled_erfc_poly(degree):
    """Power-basis coefficients (low to high) in u of the Chebyshev interpolant of R(z(u)) on [-1, u_max]."""
    def R_of_u(u):
        z = _K * (1.0 + u) / (1.0 - u)
        return np.array([math.erfc(v) * math.exp(v * v) for v in z])

    cheb = np.polynomial.Chebyshev.interpolate(R_of_u, degree, domain=[-1.0, _U_MAX])
    # Python floats, so that a float32 array times a coefficient stays a float32 operation
    return cheb.convert(kind=np.polynomial.Polynomial).coef.tolist()


_POLY = {np.dtype(np.float64): _scaled_erfc_poly(20), np.dtype(np.float32): _scaled_erfc_poly(10)}


def _normal_cdf_chunk(x, P, G):
    r"""Fill ``P`` with :math:`\Phi(x)` and ``G`` with :math:`e^{-x^2/2}` for one 1-d chunk ``x`` (same dtype)."""
    coef = _POLY[x.dtype]
    z = np.abs(x)
    z *= 1.0 / math.sqrt(2.0)
    np.minimum(z, _Z_MAX, out=z)                                  # z = |x| / sqrt 2
    u = z + _K
    z -= _K
    np.divide(z, u, out=u)                                        # u = (z - K) / (z + K)
    R = np.full_like(x, coef[-1])
    for c in coef[-2::-1]:                                        # Horner: R = (..(a_n u + a_{n-1}) u ..) + a_0
        R *= u
        R += c
    np.square(x, out=G)
    G *= -0.5
    np.exp(G, out=G)                                              # exp(-x^2 / 2)
    R *= G
    R *= 0.5                                                      # Phi(-|x|) = erfc(|x| / sqrt 2) / 2
    np.copyto(P, R)
    np.subtract(1.0, R, out=P, where=x >= 0)                      # Phi(x) = 1 - Phi(-x) for x >= 0


def _normal_cdf(x):
    r"""Return :math:`\Phi(x)` and :math:`e^{-x^2/2}`, both of x's shape and dtype, a chunk at a time."""
    P = np.empty_like(x)
    G = np.empty_like(x)
    xf, Pf, Gf = x.reshape(-1), P.reshape(-1), G.reshape(-1)
    for s in range(0, xf.size, _CHUNK):
        _normal_cdf_chunk(xf[s:s + _CHUNK], Pf[s:s + _CHUNK], Gf[s:s + _CHUNK])
    return P, G


def relu_forward(x):
    r"""ReLU, :math:`y = \max(x, 0)`.

    Parameters
    ----------
    x : ndarray, float32 or float64, any shape

    Returns
    -------
    y : ndarray, shape and dtype of ``x``
    cache : tuple ``(x > 0, x.dtype)``
    """
    check_float("x", x)
    xf = x.reshape(-1)                          # 1-d view: ufuncs on 0-d arrays would return scalars
    return np.maximum(xf, 0).reshape(x.shape), ((xf > 0).reshape(x.shape), x.dtype)


def relu_backward(dy, cache):
    r"""Gradient of ReLU: :math:`dx = dy \cdot [x > 0]`.

    Parameters
    ----------
    dy : ndarray, shape and dtype of the forward input
    cache : from :func:`relu_forward`

    Returns
    -------
    dx : ndarray, shape and dtype of ``dy``
    """
    mask, dtype = cache
    check_float("dy", dy)
    if dy.dtype != dtype:
        raise TypeError(f"dy: expected dtype {dtype} (the dtype of x), got {dy.dtype}")
    check_shape("dy", dy, mask.shape)
    # forward: y = max(x, 0)
    return np.multiply(dy.reshape(-1), mask.reshape(-1)).reshape(dy.shape)


def gelu_forward(x, approximate="none"):
    r"""GELU, exact (``approximate="none"``, :math:`x\Phi(x)`) or the tanh approximation (``"tanh"``).

    Parameters
    ----------
    x : ndarray, float32 or float64, any shape
    approximate : {"none", "tanh"}
        The same names as ``torch.nn.functional.gelu``.

    Returns
    -------
    y : ndarray, shape and dtype of ``x``
    cache : tuple for :func:`gelu_backward`
    """
    check_float("x", x)
    shape, x = x.shape, x.reshape(-1)          # 1-d view: ufuncs on 0-d arrays would return scalars
    if approximate == "none":
        P, G = _normal_cdf(x)
        return (x * P).reshape(shape), ("none", shape, x, P, G)
    if approximate == "tanh":
        th = np.square(x)
        th *= GELU_TANH_COEF
        th += 1.0
        th *= x
        th *= _SQRT_2_OVER_PI
        np.tanh(th, out=th)                     # tanh(sqrt(2/pi) (x + 0.044715 x^3))
        y = th + 1.0
        y *= x
        y *= 0.5
        return y.reshape(shape), ("tanh", shape, x, th)
    raise ValueError(f"approximate: expected 'none' or 'tanh', got {approximate!r}")


def gelu_backward(dy, cache):
    r"""Gradient of GELU.

    Exact form: :math:`dx = dy\,(\Phi(x) + x\,\varphi(x))` with :math:`\varphi(x) = e^{-x^2/2}/\sqrt{2\pi}`.
    Tanh form, with :math:`\tau = \tanh(\sqrt{2/\pi}(x + 0.044715x^3))`:
    :math:`dx = dy\left(\tfrac12(1 + \tau) + \tfrac12 x (1 - \tau^2)\sqrt{2/\pi}(1 + 3 \cdot 0.044715 x^2)\right)`.

    Parameters
    ----------
    dy : ndarray, shape and dtype of the forward input
    cache : from :func:`gelu_forward`

    Returns
    -------
    dx : ndarray, shape and dtype of ``dy``
    """
    kind, shape, x = cache[:3]                  # x is the flattened forward input
    check_float("dy", dy)
    check_same_dtype(dy=dy, x=x)
    check_shape("dy", dy, shape)
    dy = dy.reshape(-1)
    if kind == "none":
        P, G = cache[3:]
        # forward: y = x Phi(x)
        dx = x * G
        dx *= _INV_SQRT_2PI                     # x phi(x)
        dx += P
        dx *= dy
        return dx.reshape(shape)
    th = cache[3]
    # forward: y = x/2 (1 + tau),  tau = tanh(s),  s = sqrt(2/pi) (x + 0.044715 x^3)
    ds = np.square(x)
    ds *= 3.0 * GELU_TANH_COEF
    ds += 1.0
    ds *= 0.5 * _SQRT_2_OVER_PI
    ds *= x                                     # x/2 * ds/dx
    dx = np.square(th)
    np.subtract(1.0, dx, out=dx)                # dtau/ds = 1 - tau^2
    dx *= ds
    dx += 0.5
    ds = np.multiply(th, 0.5, out=ds)
    dx += ds                                    # + (1 + tau) / 2
    dx *= dy
    return dx.reshape(shape)
