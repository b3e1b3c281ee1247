r"""Sinusoidal positional encoding of "Attention Is All You Need" (Vaswani et al., 2017, section 3.5).

.. math::

    PE_{(pos,\,2i)} = \sin\!\left(\frac{pos}{10000^{2i/d_{model}}}\right), \qquad
    PE_{(pos,\,2i+1)} = \cos\!\left(\frac{pos}{10000^{2i/d_{model}}}\right)

Even columns hold sines and odd columns cosines (interleaved, as in the paper). Column pair :math:`(2i, 2i+1)` turns
at angular frequency :math:`\omega_i = 10000^{-2i/d_{model}}`, from 1 radian per position down to almost
:math:`1/10000`. Every entry lies in :math:`[-1, 1]`, and for a fixed offset :math:`k` the code of
:math:`pos + k` is a rotation of the code of :math:`pos` (pair by pair, by the angle :math:`k\omega_i`).

With an odd :math:`d_{model}` the last column is a sine whose partner cosine does not fit; the exponent keeps
:math:`2i/d_{model}` with the odd :math:`d_{model}`, exactly as the formula reads. No backward: the table is fixed.
"""
import numpy as np

from reference._checks import FLOAT_DTYPES, check_count


def sinusoidal(n_positions, d_model, dtype=np.float64):
    r"""The table :math:`PE \in \mathbb{R}^{n\_positions \times d\_model}` for positions 0 .. n_positions-1.

    Parameters
    ----------
    n_positions : int >= 0
    d_model : int >= 1
    dtype : float32 or float64
        Computed in float64, then rounded once to ``dtype``.

    Returns
    -------
    PE : ndarray (n_positions, d_model)
    """
    n_positions = check_count("n_positions", n_positions, minimum=0)
    d_model = check_count("d_model", d_model, minimum=1)
    if np.dtype(dtype) not in FLOAT_DTYPES:
        raise TypeError(f"dtype: expected float32 or float64, got {np.dtype(dtype)}")
    pos = np.arange(n_positions, dtype=np.float64)[:, None]          # (n, 1)
    two_i = np.arange(0, d_model, 2, dtype=np.float64)               # (ceil(d/2),) the 2i of each column pair
    angle = pos / 10000.0 ** (two_i / d_model)                       # (n, ceil(d/2))
    pe = np.empty((n_positions, d_model), dtype=np.float64)
    pe[:, 0::2] = np.sin(angle)
    pe[:, 1::2] = np.cos(angle[:, : d_model // 2])
    return pe.astype(dtype, copy=False)
