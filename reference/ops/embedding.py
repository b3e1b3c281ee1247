r"""Embedding lookup, with its backward pass.

.. math::

    x_{\dots} = E_{\mathrm{ids}_{\dots}}, \qquad \mathrm{ids} \in \{0, \dots, V-1\}^{\dots},\ E \in \mathbb{R}^{V \times C}

The lookup is a product with one-hot rows, :math:`x = \mathrm{onehot}(\mathrm{ids})\,E`, so the gradient is
:math:`dE = \mathrm{onehot}(\mathrm{ids})^\top dx`: row :math:`v` of :math:`dE` is the sum of the upstream gradients
of every position whose id is :math:`v` (repeated ids accumulate; unused rows get 0).
"""
import numpy as np

from reference._checks import check_float, check_int, check_same_dtype, check_shape


def forward(ids, E):
    r"""Look up the rows of ``E`` named by ``ids``.

    Parameters
    ----------
    ids : ndarray (...), integer, values in ``[0, V)``
    E : ndarray (V, C), float32 or float64

    Returns
    -------
    x : ndarray (..., C), dtype of ``E``
    cache : tuple ``(ids, E.shape, E.dtype)``
    """
    check_int("ids", ids)
    check_float("E", E)
    check_shape("E", E, (None, None))
    V = E.shape[0]
    if ids.size and (ids.min() < 0 or ids.max() >= V):
        bad = ids[(ids < 0) | (ids >= V)].ravel()[0]
        raise ValueError(f"ids: expected token ids in [0, {V - 1}], got {bad}")
    return E[ids], (ids, E.shape, E.dtype)   # (..., C)


def backward(dx, cache):
    r"""Gradient with respect to the table: :math:`dE_v = \sum_{p:\ \mathrm{ids}_p = v} dx_p`.

    Parameters
    ----------
    dx : ndarray (..., C), dtype of ``E``
    cache : from :func:`forward`

    Returns
    -------
    dE : ndarray (V, C)
    """
    ids, (V, C), dtype = cache
    check_float("dx", dx)
    check_same_dtype(dx=dx, E=np.empty(0, dtype))
    check_shape("dx", dx, ids.shape + (C,))
    # forward: x = E[ids]
    dE = np.zeros((V, C), dtype=dtype)
    np.add.at(dE, ids.reshape(-1), dx.reshape(-1, C))   # unbuffered: a repeated id adds every time
    return dE
