"""Parameter initialisation schemes (material §2.1, step 2: "parameter initialisation").

Every scheme is a pure function of a shape, an explicit ``numpy.random.Generator`` and a dtype: no global seed,
no hidden state, so the same generator state always gives the same weights. Draws are made in float64 and then
rounded to ``dtype``, so a float32 model and a float64 model built from the same seed hold the same numbers
(up to float32 rounding).

Weight matrices follow this package's layout ``W`` of shape ``(d_in, d_out)`` (``y = x @ W``), hence

    fan_in = shape[0],   fan_out = shape[1].

(PyTorch stores ``nn.Linear.weight`` as ``(d_out, d_in)``, so its fans read the shape the other way round.)

Which scheme, when
------------------
- ``normal`` (std 0.02): GPT-2 / BERT. A fixed small std, independent of width; works with LayerNorm in every block.
- ``xavier_uniform`` / ``xavier_normal`` (Glorot & Bengio, 2010): keeps the variance of activations (forward) and of
  gradients (backward) about constant for linear or tanh-like layers. The original Transformer's common
  implementations (tensor2tensor, the Annotated Transformer) use it for attention and FFN weights.
- ``he_normal`` (He et al., 2015): the ReLU zeroes half its inputs, halving the second moment; doubling the weight
  variance compensates. Use before ReLU.
- ``scaled_residual`` (GPT-2): a residual stream sums ``2 n_layer`` sublayer outputs (attention and MLP in each
  block); scaling the std of the projections that write into it by ``1/sqrt(2 n_layer)`` keeps its variance
  independent of depth at initialisation.

``activation_variances`` pushes unit-variance inputs through a deep stack and returns the variance per layer,
which is how the tests (and the training chapter's figure) show what each scheme does through depth.
"""
import math

import numpy as np

from reference._checks import FLOAT_DTYPES

ACTIVATIONS = ("relu", "tanh", "linear")


def _check_common(shape, rng, dtype):
    """Validate the arguments every scheme shares; return the shape as a tuple of ints and the dtype."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    dtype = np.dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if not all(isinstance(s, (int, np.integer)) and s >= 0 for s in shape):
        raise ValueError(f"shape: expected non-negative integers, got {shape}")
    return tuple(int(s) for s in shape), dtype


def _check_positive(name, value):
    if not (isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: expected a positive finite number, got {value!r}")


def fans(shape):
    """Fan-in and fan-out of a weight of shape ``(d_in, d_out)``.

    Parameters
    ----------
    shape : tuple of two ints
        ``(d_in, d_out)``, the layout of ``W`` in ``y = x @ W``.

    Returns
    -------
    fan_in, fan_out : int
        ``d_in`` and ``d_out``.
    """
    shape = tuple(shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"fans: expected a weight shape (d_in, d_out) with both sizes >= 1, got {shape}")
    return int(shape[0]), int(shape[1])


def normal(shape, rng, std=0.02, dtype=np.float64):
    r"""Draw from a zero-mean normal with a fixed standard deviation.

    .. math:: W_{ij} \sim \mathcal{N}(0, \sigma^2), \qquad \operatorname{Var}[W_{ij}] = \sigma^2

    GPT-2 and BERT use :math:`\sigma = 0.02` for every weight and embedding. Also used for embeddings with
    :math:`\sigma = d_\text{model}^{-1/2}`, so that :math:`\sqrt{d_\text{model}}\, E` has unit variance.

    Parameters
    ----------
    shape : int or tuple of int
    rng : numpy.random.Generator
    std : float, default 0.02
    dtype : float32 or float64, default float64

    Returns
    -------
    W : ndarray of ``shape`` and ``dtype``
    """
    shape, dtype = _check_common(shape, rng, dtype)
    _check_positive("std", std)
    return (std * rng.standard_normal(shape)).astype(dtype)


def xavier_uniform(shape, rng, gain=1.0, dtype=np.float64):
    r"""Glorot/Xavier uniform initialisation for a weight ``(d_in, d_out)``.

    .. math::
        W_{ij} \sim \mathcal{U}(-a, a), \quad a = g \sqrt{\frac{6}{n_\text{in} + n_\text{out}}}, \qquad
        \operatorname{Var}[W_{ij}] = \frac{a^2}{3} = g^2 \frac{2}{n_\text{in} + n_\text{out}}

    The harmonic compromise between :math:`1/n_\text{in}` (keeps the forward variance) and
    :math:`1/n_\text{out}` (keeps the backward variance). Use for linear and tanh-like layers; the gain
    :math:`g = 5/3` (PyTorch's ``calculate_gain("tanh")``) offsets tanh's contraction of the variance.

    Parameters
    ----------
    shape : (d_in, d_out)
    rng : numpy.random.Generator
    gain : float, default 1.0
    dtype : float32 or float64, default float64

    Returns
    -------
    W : ndarray (d_in, d_out)
    """
    shape, dtype = _check_common(shape, rng, dtype)
    _check_positive("gain", gain)
    fan_in, fan_out = fans(shape)
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, size=shape).astype(dtype)


def xavier_normal(shape, rng, gain=1.0, dtype=np.float64):
    r"""Glorot/Xavier normal initialisation for a weight ``(d_in, d_out)``.

    .. math:: W_{ij} \sim \mathcal{N}\!\left(0,\; g^2 \frac{2}{n_\text{in} + n_\text{out}}\right)

    Same variance as :func:`xavier_uniform`; same use.

    Parameters
    ----------
    shape : (d_in, d_out)
    rng : numpy.random.Generator
    gain : float, default 1.0
    dtype : float32 or float64, default float64

    Returns
    -------
    W : ndarray (d_in, d_out)
    """
    shape, dtype = _check_common(shape, rng, dtype)
    _check_positive("gain", gain)
    fan_in, fan_out = fans(shape)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return (std * rng.standard_normal(shape)).astype(dtype)


def he_normal(shape, rng, dtype=np.float64):
    r"""He/Kaiming normal initialisation (fan-in mode) for a weight ``(d_in, d_out)`` followed by a ReLU.

    .. math:: W_{ij} \sim \mathcal{N}\!\left(0,\; \frac{2}{n_\text{in}}\right)

    For :math:`z = h W` with :math:`h = \operatorname{ReLU}(z')` and :math:`z'` symmetric,
    :math:`\mathbb{E}[h^2] = \tfrac12 \operatorname{Var}[z']`, so
    :math:`\operatorname{Var}[z] = n_\text{in} \operatorname{Var}[W]\, \tfrac12 \operatorname{Var}[z']
    = \operatorname{Var}[z']`:
    the pre-activation variance is the same in every layer. Use before ReLU.

    Parameters
    ----------
    shape : (d_in, d_out)
    rng : numpy.random.Generator
    dtype : float32 or float64, default float64

    Returns
    -------
    W : ndarray (d_in, d_out)
    """
    shape, dtype = _check_common(shape, rng, dtype)
    fan_in, _ = fans(shape)
    return (math.sqrt(2.0 / fan_in) * rng.standard_normal(shape)).astype(dtype)


def scaled_residual(shape, rng, n_layer, std=0.02, dtype=np.float64):
    r"""GPT-2's init for the projections that write into the residual stream (attention ``Wo``, MLP ``W2``).

    .. math::
        W_{ij} \sim \mathcal{N}\!\left(0,\; \frac{\sigma^2}{2 N}\right), \qquad \sigma = 0.02,\; N = n_\text{layer}

    A pre-LN stack adds :math:`2N` sublayer outputs to the residual stream; with independent terms the
    stream's variance grows by their sum, so dividing each term's variance by :math:`2N` keeps the total
    independent of depth.

    Parameters
    ----------
    shape : int or tuple of int
    rng : numpy.random.Generator
    n_layer : int
        Number of blocks (each holds two residual branches).
    std : float, default 0.02
    dtype : float32 or float64, default float64

    Returns
    -------
    W : ndarray of ``shape`` and ``dtype``
    """
    if not isinstance(n_layer, (int, np.integer)) or n_layer < 1:
        raise ValueError(f"n_layer: expected a positive integer, got {n_layer!r}")
    _check_positive("std", std)
    return normal(shape, rng, std=std / math.sqrt(2 * n_layer), dtype=dtype)


def activation_variances(init, depth, width, activation, rng, n_samples=1024, dtype=np.float64):
    r"""Variance of the pre-activations of each layer of a deep ``linear -> activation`` stack at init.

    Starting from :math:`h_0 \sim \mathcal{N}(0, 1)` of shape ``(n_samples, width)``, for :math:`l = 1 \dots L`:

    .. math:: z_l = h_{l-1} W_l, \qquad h_l = \phi(z_l), \qquad v_l = \operatorname{Var}[z_l]

    (biases are zero at init, so they are left out). :math:`v_l` is what the init formulas control: it stays
    put under a good scheme, and grows or shrinks geometrically under a badly scaled one.

    Parameters
    ----------
    init : callable ``(shape, rng) -> W``
        A scheme with its options bound, e.g. ``he_normal`` or ``functools.partial(normal, std=1.0)``.
    depth : int
        Number of layers :math:`L`.
    width : int
        Width of every layer (all weights are ``(width, width)``).
    activation : {"relu", "tanh", "linear"}
        :math:`\phi`.
    rng : numpy.random.Generator
        Draws the inputs, then is passed to ``init`` for each layer.
    n_samples : int, default 1024
    dtype : float32 or float64, default float64

    Returns
    -------
    v : ndarray (depth,) float64
        ``v[l - 1]`` is the variance of :math:`z_l` over all samples and units.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
    for name, value in (("depth", depth), ("width", width), ("n_samples", n_samples)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    _, dtype = _check_common((n_samples, width), rng, dtype)
    h = rng.standard_normal((n_samples, width)).astype(dtype)   # (n_samples, width)
    v = np.empty(depth)
    for layer in range(depth):
        W = init((width, width), rng).astype(dtype, copy=False)   # (width, width)
        z = h @ W                                                 # (n_samples, width)
        v[layer] = np.var(z, dtype=np.float64)
        if activation == "relu":
            h = np.maximum(z, 0)
        elif activation == "tanh":
            h = np.tanh(z)
        else:
            h = z
    return v
