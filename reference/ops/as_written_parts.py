r"""Each error of the material's printed PE and LayerNorm formulas alone (errata; forward only, like ``as_written``).

:mod:`reference.ops.as_written` runs the printed formulas whole. A printed formula that is wrong in three places
does not say which of the three does the damage, so this module takes the paper's formula and puts back one error at
a time. Nothing here is used by any model.

**Positional encoding (§3.2.3).** Printed: :math:`P(pos) = \sin\left(\frac{pos}{10000^{2/d_p}}\right)^{2048}`.
Paper: :math:`PE_{(pos,2i)} = \sin(pos\,\omega_i)`, :math:`PE_{(pos,2i+1)} = \cos(pos\,\omega_i)`,
:math:`\omega_i = 10000^{-2i/d}`. The printed formula differs in three ways, and :func:`positional_variants` builds
the paper's table with each one alone:

==================  ================================================================  =========================
variant             table                                                             the one error
==================  ================================================================  =========================
``paper``           :math:`\sin(pos\,\omega_i)`, :math:`\cos(pos\,\omega_i)`            none
``no_index_i``      :math:`\sin(pos\,\omega_1)`, :math:`\cos(pos\,\omega_1)` in every pair  :math:`2/d` for :math:`2i/d`
``no_cos``          :math:`\sin(pos\,\omega_i)` in both columns of pair i              no cosine
``power_2048``      the paper's entries raised to the power 2048                       the exponent
``as_printed``      :func:`reference.ops.as_written.positional_encoding`                all three
==================  ================================================================  =========================

:func:`positional_stats` measures what each one breaks: how many numbers a code really carries (the table's
distinct columns), how many positions share their code with another, how many positions look closer to position 0
than its own neighbour does (aliasing), and whether the code of :math:`pos + k` is still a linear map of the code of
:math:`pos` (the paper's reason for sines *and* cosines: a fixed rotation per pair).

**LayerNorm (§3.2.5).** Printed: :math:`\gamma (x + \beta)/\sqrt{d}`. Correct:
:math:`\gamma \odot (x - \mu)/\sqrt{\sigma^2 + \epsilon} + \beta`. Besides the missing statistics, the printed
:math:`\beta` sits *inside*, added to the input before the scaling. :func:`layer_norm_beta_inside` keeps the correct
normalisation and moves only :math:`\beta` inside, :math:`\gamma \odot \mathrm{norm}(x + \beta)`: that error alone.
A :math:`\beta` added before a mean subtraction loses its mean, so no :math:`\beta` can give the output an offset.
"""
import numpy as np

from reference.ops import as_written
from reference.ops import layernorm as correct_layernorm
from reference.ops import positional

PE_VARIANTS = ("paper", "no_index_i", "no_cos", "power_2048", "as_printed")
# Two codes closer than this in every coordinate cannot be told apart once added to embeddings of size ~1.
CODE_RESOLUTION = as_written.CODE_RESOLUTION


def positional_variants(n_positions, d):
    r"""The paper's sinusoidal table and the same table with each error of the printed formula alone.

    Parameters
    ----------
    n_positions : int >= 1
    d : even int >= 2, the width of a code

    Returns
    -------
    dict ``{variant: ndarray (n_positions, d) float64}`` for the variants of :data:`PE_VARIANTS`.
    """
    if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)) or d < 2 or d % 2:
        raise ValueError(f"d: expected an even int >= 2, got {d!r}")
    paper = positional.sinusoidal(n_positions, d)                      # (n, d), checks n_positions
    pos = np.arange(n_positions, dtype=np.float64)[:, None]            # (n, 1)
    two_i = np.arange(0, d, 2, dtype=np.float64)                       # (d/2,) the 2i of each column pair
    angle = pos / 10000.0 ** (two_i / d)                               # (n, d/2) the paper's angles
    one_angle = pos / 10000.0 ** (2.0 / d)                             # (n, 1) the printed 2/d_p: i is gone
    no_index_i = np.empty((n_positions, d))
    no_index_i[:, 0::2] = np.sin(one_angle)                            # every pair turns at the same frequency
    no_index_i[:, 1::2] = np.cos(one_angle)
    no_cos = np.repeat(np.sin(angle), 2, axis=1)                       # (n, d) sine in both columns of a pair
    return {"paper": paper, "no_index_i": no_index_i, "no_cos": no_cos, "power_2048": paper ** 2048,
            "as_printed": as_written.positional_encoding(n_positions, d)}


def positional_stats(pe, offset=1):
    r"""What a positional table can still do: the numbers :func:`positional_variants`' errors break.

    Parameters
    ----------
    pe : ndarray (n, d), n > offset + 1
    offset : int >= 1, the k of the relative-position test

    Returns
    -------
    dict with
        ``"distinct_columns"``: how many different columns the table has (d for the paper; a copied column
        carries no new number);
        ``"min"``, ``"max"``: the range of the entries;
        ``"fraction_near_zero"``: entries within :data:`CODE_RESOLUTION` of 0;
        ``"positions_sharing_a_code"``: positions whose code is within :data:`CODE_RESOLUTION` of another
        position's in every coordinate;
        ``"closer_to_0_than_1"``: positions :math:`j \ge 2` whose code is closer (Euclidean) to position 0's than
        position 1's is: positions the code confuses with the start;
        ``"relative_residual"``: :math:`\min_R \lVert PE_{[k:]} - PE_{[:-k]} R\rVert / \lVert PE_{[k:]}\rVert` by
        least squares: 0 (round-off) when the code of :math:`pos + k` is a linear map of the code of :math:`pos`.
    """
    n = pe.shape[0]
    if not (isinstance(offset, (int, np.integer)) and 1 <= offset and n > offset + 1):
        raise ValueError(f"offset: expected an int >= 1 with n > offset + 1, got offset={offset!r}, n={n}")
    dist = np.zeros((n, n))                        # (n, n) max-abs distance between the codes of two positions
    for j in range(pe.shape[1]):
        np.maximum(dist, np.abs(pe[:, None, j] - pe[None, :, j]), out=dist)
    np.fill_diagonal(dist, np.inf)
    from_0 = np.linalg.norm(pe - pe[0], axis=1)                        # (n,) Euclidean distance to position 0
    before, after = pe[:-offset], pe[offset:]                          # (n - k, d) codes of pos and pos + k
    R, *_ = np.linalg.lstsq(before, after, rcond=None)                 # (d, d) the best linear map
    scale = np.linalg.norm(after)
    return {
        "distinct_columns": int(np.unique(pe, axis=1).shape[1]),
        "min": float(pe.min()), "max": float(pe.max()),
        "fraction_near_zero": float((np.abs(pe) < CODE_RESOLUTION).mean()),
        "positions_sharing_a_code": int((dist.min(axis=1) < CODE_RESOLUTION).sum()),
        "closer_to_0_than_1": int((from_0[2:] < from_0[1]).sum()),
        "relative_residual": float(np.linalg.norm(after - before @ R) / scale) if scale > 0 else 0.0,
    }


def layer_norm_beta_inside(x, gamma, beta, eps=1e-5):
    r"""The correct LayerNorm with only :math:`\beta` moved inside: :math:`\gamma \odot \mathrm{norm}(x + \beta)`.

    :math:`\mathrm{norm}(u) = (u - \mu_u)/\sqrt{\sigma_u^2 + \epsilon}` is :func:`reference.ops.layernorm.forward`
    with :math:`\gamma = 1, \beta = 0`. The mean of :math:`\beta` is subtracted with the row's mean, so the output
    of every row has mean 0 whatever :math:`\beta` is (for :math:`\gamma = 1`), and a constant :math:`\beta` has no
    effect at all.

    Parameters
    ----------
    x : ndarray (..., d);  gamma, beta : ndarray (d,), one float dtype

    Returns
    -------
    y : ndarray (..., d)
    """
    ones, zeros = np.ones_like(gamma), np.zeros_like(beta)
    u, _ = correct_layernorm.forward(x + beta, ones, zeros, eps)       # (..., d) checks shapes and dtypes
    return gamma * u


def layer_norm_beta_diagnostics(x, beta):
    r"""What :math:`\beta` does in the correct LayerNorm, in the printed one, and with only :math:`\beta` inside.

    :math:`\gamma = 1`. For each of the three: the mean of the output over all entries (the offset that
    :math:`\beta` should set: the correct op gives :math:`\bar\beta` exactly, since every normalised row has mean 0),
    and how far that mean moves when every :math:`\beta_j` moves by 1 (the direction in which training could push
    the offset: 1 for the correct op, :math:`1/\sqrt d` as printed, 0 with :math:`\beta` inside).

    Parameters
    ----------
    x : ndarray (..., d) float64;  beta : ndarray (d,) float64

    Returns
    -------
    dict with ``"beta_mean"`` and, for each of ``correct``, ``as_printed``, ``beta_inside``: ``_output_mean`` and
    ``_shift_response``.
    """
    gamma = np.ones(x.shape[-1], dtype=x.dtype)
    outputs = {"correct": lambda b: correct_layernorm.forward(x, gamma, b)[0],
               "as_printed": lambda b: as_written.layer_norm(x, gamma, b),
               "beta_inside": lambda b: layer_norm_beta_inside(x, gamma, b)}
    stats = {"beta_mean": float(beta.mean())}
    for name, f in outputs.items():
        stats[name + "_output_mean"] = float(f(beta).mean())
        # each of the three is linear in a uniform shift beta + t 1 (correct, as printed) or blind to it (beta
        # inside), so a central difference of step 1 is exact up to round-off
        stats[name + "_shift_response"] = float((f(beta + 1).mean() - f(beta - 1).mean()) / 2)
    return stats
