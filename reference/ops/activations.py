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

Speed (:func:`gelu_forward_fast`, :func:`gelu_backward_fast`): the same steps, each an in-place ufunc on a chunk of
``_CHUNK`` elements, so that a chunk's temporaries stay in the CPU cache instead of going out to memory and back
once per step; the chunks are split over threads (``reference/_threads.py``). ReLU has no fast variant: it is one
ufunc each way already.

``ACTIVATIONS`` is the one table of activations by name (``"relu"``, ``"gelu"``, ``"gelu_tanh"``); the FFN and
every model config look their activation up there (:func:`get`).
"""
import math
from functools import partial
from typing import Callable, NamedTuple

import numpy as np

from reference import _threads
from reference._checks import check_choice, check_float, check_grad

GELU_TANH_COEF = 0.044715
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
APPROXIMATIONS = ("none", "tanh")


class ReluCache(NamedTuple):
    positive: np.ndarray                        # x > 0, the shape of x
    dtype: np.dtype                             # x's dtype


class GeluCache(NamedTuple):
    x: np.ndarray                               # the input
    approximate: str                            # "none" or "tanh"
    t: np.ndarray                               # Phi(x) ("none") or tanh(sqrt(2/pi) (x + 0.044715 x^3)) ("tanh")


def relu_forward(x):
    r"""ReLU, :math:`y = \max(x, 0)` (NaN stays NaN).

    Parameters
    ----------
    x : ndarray, float32 or float64, any shape

    Returns
    -------
    y : ndarray, shape and dtype of ``x``
    cache : ReluCache
    """
    check_float("x", x)
    y = np.maximum(x, 0, out=np.empty_like(x))  # out=: a 0-d x gives a 0-d array, not a NumPy scalar
    return y, ReluCache(x > 0, x.dtype)


def relu_backward(dy, cache):
    r"""Gradient of ReLU: :math:`dx = dy \cdot [x > 0]`.

    Parameters
    ----------
    dy : ndarray, shape and dtype of the forward input
    cache : ReluCache

    Returns
    -------
    dx : ndarray, shape and dtype of ``dy``
    """
    check_grad("dy", dy, cache.positive.shape, cache.dtype)
    # forward: y = max(x, 0)
    dx = np.multiply(dy, cache.positive, out=np.empty_like(dy))
    return dx


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
    cache : GeluCache
    """
    check_float("x", x)
    check_choice("approximate", approximate, APPROXIMATIONS)
    if approximate == "none":
        cdf = _normal_cdf(x)                                        # Phi(x)
        y = x * cdf
        return np.asarray(y), GeluCache(x, approximate, cdf)       # asarray: a 0-d x gives a NumPy scalar
    cube = GELU_TANH_COEF * x ** 3
    inner = _SQRT_2_OVER_PI * (x + cube)                           # sqrt(2/pi) (x + 0.044715 x^3)
    tanh_out = np.tanh(inner)
    y = 0.5 * x * (1 + tanh_out)
    return np.asarray(y), GeluCache(x, approximate, np.asarray(tanh_out))


def gelu_backward(dy, cache):
    r"""Gradient of GELU.

    Exact form: :math:`dx = dy\,(\Phi(x) + x\,\varphi(x))` with :math:`\varphi(x) = e^{-x^2/2}/\sqrt{2\pi}`.
    Tanh form, with :math:`\tau = \tanh(\sqrt{2/\pi}(x + 0.044715x^3))`:
    :math:`dx = dy\left(\tfrac12(1 + \tau) + \tfrac12 x (1 - \tau^2)\sqrt{2/\pi}(1 + 3 \cdot 0.044715 x^2)\right)`.

    Parameters
    ----------
    dy : ndarray, shape and dtype of the forward input
    cache : GeluCache, from :func:`gelu_forward` or :func:`gelu_forward_fast`

    Returns
    -------
    dx : ndarray, shape and dtype of ``dy``
    """
    x = cache.x
    check_grad("dy", dy, x.shape, x.dtype)
    if cache.approximate == "none":
        cdf = cache.t
        # forward: y = x Phi(x)
        pdf = _INV_SQRT_2PI * np.exp(-0.5 * x ** 2)                  # phi(x) = Phi'(x)
        local_grad = cdf + x * pdf
        return np.asarray(local_grad * dy)
    tanh_out = cache.t
    # forward: y = x/2 (1 + tanh_out),  tanh_out = tanh(inner),  inner = sqrt(2/pi) (x + 0.044715 x^3)
    sech2 = 1 - tanh_out ** 2                                       # d tanh_out / d inner
    dinner = _SQRT_2_OVER_PI * (1 + 3 * GELU_TANH_COEF * x ** 2)    # d inner / dx
    local_grad = 0.5 * (1 + tanh_out) + 0.5 * x * sech2 * dinner
    return np.asarray(local_grad * dy)


def gelu_forward_fast(x, approximate="none"):
    """:func:`gelu_forward` in cache-sized chunks of in-place ufuncs, split over threads."""
    check_float("x", x)
    check_choice("approximate", approximate, APPROXIMATIONS)
    xf = x.reshape(-1)                          # 1-d view (a copy only if x is not contiguous)
    y, t = np.empty_like(xf), np.empty_like(xf)

    def chunk(c, _):
        xc, yc, tc = xf[c], y[c], t[c]
        if approximate == "none":
            _normal_cdf_chunk(xc, tc)           # t = Phi(x)
            np.multiply(xc, tc, out=yc)
            return
        np.square(xc, out=tc)
        tc *= GELU_TANH_COEF
        tc += 1.0
        tc *= xc
        tc *= _SQRT_2_OVER_PI
        np.tanh(tc, out=tc)                     # t = tanh(sqrt(2/pi) (x + 0.044715 x^3))
        np.add(tc, 1.0, out=yc)
        yc *= xc
        yc *= 0.5                               # y = x/2 (1 + t)

    _for_each_chunk(chunk, xf.size, x.dtype)
    return y.reshape(x.shape), GeluCache(x, approximate, t.reshape(x.shape))


def gelu_backward_fast(dy, cache):
    """:func:`gelu_backward` in cache-sized chunks of in-place ufuncs, split over threads."""
    x = cache.x
    check_grad("dy", dy, x.shape, x.dtype)
    xf, tf, dyf = x.reshape(-1), cache.t.reshape(-1), dy.reshape(-1)
    dx = np.empty_like(dyf)

    def chunk(c, scratch):
        xc, tc, dyc, dxc = xf[c], tf[c], dyf[c], dx[c]
        a = np.square(xc, out=scratch[:xc.size])
        if cache.approximate == "none":
            a *= -0.5
            np.exp(a, out=a)
            a *= _INV_SQRT_2PI
            a *= xc                             # x phi(x)
            np.add(a, tc, out=dxc)              # Phi(x) + x phi(x)
        else:
            a *= 3.0 * GELU_TANH_COEF
            a += 1.0
            a *= 0.5 * _SQRT_2_OVER_PI
            a *= xc                             # x/2 d inner/dx
            np.square(tc, out=dxc)
            np.subtract(1.0, dxc, out=dxc)      # sech^2 = 1 - t^2
            dxc *= a
            dxc += 0.5
            np.multiply(tc, 0.5, out=a)
            dxc += a                            # + (1 + t) / 2
        dxc *= dyc

    _for_each_chunk(chunk, xf.size, x.dtype)
    return dx.reshape(x.shape)


class Activation(NamedTuple):
    forward: Callable                           # x -> (y, cache)
    backward: Callable                          # (dy, cache) -> dx
    forward_fast: Callable
    backward_fast: Callable


ACTIVATIONS = {
    "relu": Activation(relu_forward, relu_backward, relu_forward, relu_backward),
    "gelu": Activation(partial(gelu_forward, approximate="none"), gelu_backward,
                       partial(gelu_forward_fast, approximate="none"), gelu_backward_fast),
    "gelu_tanh": Activation(partial(gelu_forward, approximate="tanh"), gelu_backward,
                            partial(gelu_forward_fast, approximate="tanh"), gelu_backward_fast),
}


def get(name):
    """The :class:`Activation` called ``name`` (one of ``ACTIVATIONS``), or a clear TypeError/ValueError."""
    return ACTIVATIONS[check_choice("activation", name, tuple(ACTIVATIONS))]


# ---------------------------------------------------------------------------------------------------------------
# Private helpers

# R(z) = erfc(z) exp(z^2) decreases smoothly from 1 (z = 0) to ~1/(z sqrt(pi)). With u = (z - K) / (z + K) it is a
# smooth function of u on [-1, u_max], where a degree-20 polynomial (interpolating at Chebyshev points) reaches
# ~1e-15 and degree 10 ~1e-9. In the power basis its coefficients sum to ~1.002 in absolute value, so Horner's
# rule loses nothing. Beyond Z_MAX, exp(-z^2) underflows float64, so clipping z there changes nothing.
_K = 3.0
_Z_MAX = 26.0
_U_MAX = (_Z_MAX - _K) / (_Z_MAX + _K)
_CHUNK = 1 << 15                     # elements per pass: the temporaries of one chunk stay in cache
_MIN_PARALLEL = 1 << 17              # elements below which threads cost more than they save


def _scaled_erfc_poly(degree):
    """Power-basis coefficients (low to high) in u of the Chebyshev interpolant of R(z(u)) on [-1, u_max]."""
    def R_of_u(u):
        z = _K * (1.0 + u) / (1.0 - u)
        return np.array([math.erfc(v) * math.exp(v * v) for v in z])

    cheb = np.polynomial.Chebyshev.interpolate(R_of_u, degree, domain=[-1.0, _U_MAX])
    # Python floats, so that a float32 array times a coefficient stays a float32 operation
    return cheb.convert(kind=np.polynomial.Polynomial).coef.tolist()


_POLY = {np.dtype(np.float64): _scaled_erfc_poly(20), np.dtype(np.float32): _scaled_erfc_poly(10)}


def _normal_cdf_chunk(x, P):
    r"""Fill ``P`` with :math:`\Phi(x)` for one 1-d chunk ``x`` (same dtype)."""
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
    G = np.square(x)
    G *= -0.5
    np.exp(G, out=G)                                              # exp(-x^2 / 2)
    R *= G
    R *= 0.5                                                      # Phi(-|x|) = erfc(|x| / sqrt 2) / 2
    np.copyto(P, R)
    np.subtract(1.0, R, out=P, where=x >= 0)                      # Phi(x) = 1 - Phi(-x) for x >= 0


def _normal_cdf(x):
    r""":math:`\Phi(x)`, of x's shape and dtype, a chunk at a time."""
    xf = x.reshape(-1)
    P = np.empty_like(xf)
    for s in range(0, xf.size, _CHUNK):
        _normal_cdf_chunk(xf[s:s + _CHUNK], P[s:s + _CHUNK])
    return P.reshape(x.shape)


def _for_each_chunk(fn, n, dtype):
    """Call ``fn(slice, scratch)`` on chunks of ``_CHUNK`` elements covering ``range(n)``, the chunks split over
    threads; ``scratch`` is a buffer of one chunk that each thread allocates once (allocating it per chunk costs
    more than the arithmetic: a 128 KiB array is just above glibc's threshold for handing out fresh pages)."""
    def run_part(part):
        scratch = np.empty(min(_CHUNK, n), dtype=dtype)
        for s in range(part.start, part.stop, _CHUNK):
            fn(slice(s, min(s + _CHUNK, part.stop)), scratch)

    _threads.run(run_part, _threads.parts(n, _threads.workers_for(n, _MIN_PARALLEL)))
