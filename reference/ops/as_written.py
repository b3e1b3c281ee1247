r"""The material's own formulas of §3.2.3–§3.2.5, implemented exactly as printed (errata; forward only).

Nothing here is used by the model. Each function computes what the material's equation says, so the chapter and
``tests/ops/test_as_written.py`` can show with numbers how it differs from the correct op in :mod:`reference`.
The ``*_diagnostics`` helpers return those numbers as plain dicts (floats, ints and bools) for printing.

Convention: rows are vectors (``x @ W``), as everywhere in :mod:`reference`; the material writes :math:`W_1 x`
with column vectors, which is the same map with :math:`W` transposed.
"""
import numpy as np

from reference._checks import FLOAT_DTYPES, check_count, check_float, check_same_dtype, check_shape
from reference.ops import ffn as correct_ffn
from reference.ops import layernorm as correct_layernorm
from reference.ops import positional as correct_positional

# Two codes closer than this (max-abs over dimensions) cannot be told apart once added to embeddings of size ~1.
CODE_RESOLUTION = 1e-3


def positional_encoding(n_positions, d_p, dtype=np.float64):
    r"""§3.2.3 as printed: :math:`P(pos) = \sin\left(\frac{pos}{10000^{2/d_p}}\right)^{2048}`.

    The material: "通常，位置编码采用正弦函数或对数正弦函数形式，如下： ... 其中，:math:`pos` 是序列中的位置，
    :math:`d_p` 是位置编码的维度。" ("usually the positional encoding takes a sine or log-sine form, as follows ...
    where pos is the position in the sequence and d_p the dimension of the encoding.")

    Reading: ``\sin(\cdot)^{2048}`` is the sine raised to the power 2048 (as :math:`\sin^2 x` is the square).
    The formula has no dimension index, so it gives one scalar per position; we broadcast it to all :math:`d_p`
    columns to get a table of the same shape as the correct one.

    What is wrong: (1) there is no dimension index :math:`i`, so every dimension carries the same number and the
    "vector" holds one number of information; (2) an even power of a sine lies in :math:`[0, 1]` and
    :math:`|\sin|^{2048}` is almost always ~0 (it is above 0.5 only where :math:`|\sin| > 0.99966`), so nearly all
    positions map to the same code; (3) there is no "log-sine" form. The paper (Vaswani et al., 2017) has
    :math:`PE_{(pos,2i)} = \sin(pos/10000^{2i/d_{model}})`, :math:`PE_{(pos,2i+1)} = \cos(\cdot)`: see
    :func:`reference.ops.positional.sinusoidal`.

    Returns
    -------
    P : ndarray (n_positions, d_p), every column equal
    """
    if np.dtype(dtype) not in FLOAT_DTYPES:
        raise TypeError(f"dtype: expected float32 or float64, got {np.dtype(dtype)}")
    check_count("n_positions", n_positions, minimum=0)
    check_count("d_p", d_p, minimum=1)
    pos = np.arange(n_positions, dtype=np.float64)                  # (n,)
    p = np.sin(pos / 10000.0 ** (2.0 / d_p)) ** 2048                # (n,) one scalar per position
    return np.repeat(p[:, None], d_p, axis=1).astype(dtype, copy=False)


def _sigmoid(a):
    """Logistic sigmoid 1 / (1 + e^{-a}), written with tanh so that it cannot overflow."""
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def ffn(x, W1, b1, W2, b2):
    r"""§3.2.4 as printed: :math:`F(x) = \mathrm{ReLU}(W_2\,\sigma(W_1 x + b_1) + b_2)`.

    The material: "前馈神经网络是一种常见的神经网络结构，由两个全连接层组成。" ("a feed-forward network is a common
    structure made of two fully connected layers.") :math:`\sigma` is not defined there; we read it as the logistic
    sigmoid, its usual meaning. In the house's row-vector convention: :math:`\mathrm{ReLU}(\sigma(x W_1 + b_1) W_2 + b_2)`.

    What is wrong: the ReLU sits *outside*, on the block's output, so :math:`F(x) \ge 0` always. Added to the residual
    stream, the block could only push every coordinate up, never down. The paper's FFN is
    :math:`\max(0, x W_1 + b_1) W_2 + b_2`: the non-linearity between the two layers, none after the second
    (see :func:`reference.ops.ffn.forward`).

    Parameters
    ----------
    x : ndarray (..., d_model);  W1 : (d_model, d_ff);  b1 : (d_ff,);  W2 : (d_ff, d_model);  b2 : (d_model,)

    Returns
    -------
    F : ndarray (..., d_model), every entry >= 0
    """
    check_float("x", x, ndim_min=1)
    for name, a, shape in (("W1", W1, (x.shape[-1], None)), ("b1", b1, (W1.shape[-1],)),
                           ("W2", W2, (W1.shape[-1], x.shape[-1])), ("b2", b2, (x.shape[-1],))):
        check_float(name, a)
        check_shape(name, a, shape)
    check_same_dtype(x=x, W1=W1, b1=b1, W2=W2, b2=b2)
    h = _sigmoid(x @ W1 + b1)                   # (..., d_ff)
    return np.maximum(h @ W2 + b2, 0)           # (..., d_model)


def layer_norm(x, gamma, beta):
    r"""§3.2.5 as printed: :math:`\mathrm{LayerNorm}(x_{l-1}, \gamma_l, \beta_l) = \gamma_l \frac{x_{l-1} + \beta_l}{\sqrt{d_{l-1}}}`.

    The material: "层ORMAL化是一种正则化技术，用于减少过拟合。" ("layer normalisation is a regularisation technique
    used to reduce over-fitting.") We read :math:`d_{l-1}` as the size of :math:`x_{l-1}`'s last axis.

    What is wrong: nothing is estimated from the row. There is no mean to subtract and no standard deviation to
    divide by; :math:`\sqrt{d}` is a constant, so the output keeps the input's offset and spread (only rescaled
    by :math:`1/\sqrt d`), and :math:`\beta` shifts the input instead of the output. It is also not a
    regulariser: LayerNorm keeps activations at a fixed scale so training is stable. The correct op is
    :math:`\gamma \odot (x - \mu)/\sqrt{\sigma^2 + \epsilon} + \beta` (see :func:`reference.ops.layernorm.forward`).

    Parameters
    ----------
    x : ndarray (..., d);  gamma, beta : ndarray (d,)

    Returns
    -------
    y : ndarray (..., d)
    """
    check_float("x", x, ndim_min=1)
    for name, a in (("gamma", gamma), ("beta", beta)):
        check_float(name, a)
        check_shape(name, a, (x.shape[-1],))
    check_same_dtype(x=x, gamma=gamma, beta=beta)
    return gamma * (x + beta) / np.sqrt(x.dtype.type(x.shape[-1]))


def layer_norm_diagnostics(x):
    """Row statistics after the as-written LayerNorm and after the correct one (gamma = 1, beta = 0).

    The correct op gives rows of mean 0 and standard deviation 1 (up to eps); the as-written one gives
    mean(x)/sqrt(d) and std(x)/sqrt(d). Means and stds are averaged over the rows of ``x`` (..., d).
    """
    d = x.shape[-1]
    gamma, beta = np.ones(d, dtype=x.dtype), np.zeros(d, dtype=x.dtype)
    wrong = layer_norm(x, gamma, beta)
    right, _ = correct_layernorm.forward(x, gamma, beta)
    return {
        "input_row_mean": float(x.mean(-1).mean()), "input_row_std": float(x.std(-1).mean()),
        "as_written_row_mean": float(wrong.mean(-1).mean()), "as_written_row_std": float(wrong.std(-1).mean()),
        "correct_row_mean": float(right.mean(-1).mean()), "correct_row_std": float(right.std(-1).mean()),
    }


def ffn_diagnostics(x, W1, b1, W2, b2):
    """Sign of the outputs of the as-written FFN and of the correct (ReLU) FFN on the same input and weights."""
    wrong = ffn(x, W1, b1, W2, b2)
    right, _ = correct_ffn.forward(x, W1, b1, W2, b2, activation="relu")
    return {
        "as_written_min": float(wrong.min()), "as_written_fraction_negative": float((wrong < 0).mean()),
        "correct_min": float(right.min()), "correct_fraction_negative": float((right < 0).mean()),
    }


def _code_stats(pe):
    """Range, collapse and distinctness of a positional table (n, d)."""
    n = pe.shape[0]
    dist = np.zeros((n, n))                     # (n, n) max-abs distance between the codes of two positions
    for j in range(pe.shape[1]):
        np.maximum(dist, np.abs(pe[:, None, j] - pe[None, :, j]), out=dist)
    np.fill_diagonal(dist, np.inf)
    return {
        "min": float(pe.min()), "max": float(pe.max()),
        "fraction_near_zero": float((np.abs(pe) < CODE_RESOLUTION).mean()),
        "all_dimensions_identical": bool(np.all(pe == pe[:, :1])),
        "positions_sharing_a_code": int((dist.min(axis=1) < CODE_RESOLUTION).sum()),
    }


def positional_diagnostics(n_positions, d_p):
    """Compare the as-written PE with the paper's on positions 0..n_positions-1 (n_positions >= 2).

    For each table: min and max value, the fraction of entries within ``CODE_RESOLUTION`` of 0, whether all
    dimensions are identical, and how many positions share their code with another position (max-abs distance
    below ``CODE_RESOLUTION``). Keys are prefixed ``as_written_`` and ``correct_``.
    """
    stats = {}
    for prefix, pe in (("as_written_", positional_encoding(n_positions, d_p)),
                       ("correct_", correct_positional.sinusoidal(n_positions, d_p))):
        stats.update({prefix + k: v for k, v in _code_stats(pe).items()})
    return stats
