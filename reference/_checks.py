"""Input validation shared by the reference ops.

Every check raises ``TypeError`` (wrong kind of value) or ``ValueError`` (wrong shape or value) with a message
that names what was expected and what came, so a learner sees the mistake, not a broadcast into a wrong answer.
"""
import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)


def check_float(name, x, ndim_min=0):
    """Require a real float32/float64 ndarray with at least ``ndim_min`` axes; return it unchanged.

    float16 passes as well (the messages name the two dtypes a caller should use): mixed-precision training
    (``training/precision.py``) runs the GPT's ops in real half precision. The ops are tested in float32 and
    float64, and in float16 only through the GPT.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray of float32 or float64, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES and x.dtype != np.float16:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {x.dtype}")
    if x.ndim < ndim_min:
        raise ValueError(f"{name}: expected at least {ndim_min} dimension(s), got shape {x.shape}")
    return x


def check_same_dtype(**arrays):
    """Require all named arrays to share one dtype (no silent float32 -> float64 promotion)."""
    items = [(k, v) for k, v in arrays.items() if v is not None]
    dtypes = {v.dtype for _, v in items}
    if len(dtypes) > 1:
        desc = ", ".join(f"{k}: {v.dtype}" for k, v in items)
        raise TypeError(f"expected one float dtype for all inputs, got {desc}")


def check_shape(name, x, expected):
    """Require ``x.shape == expected``; ``None`` in ``expected`` matches any size on that axis."""
    ok = x.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, x.shape))
    if not ok:
        want = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ("," if len(expected) == 1 else "") + ")"
        raise ValueError(f"{name}: expected shape {want}, got {x.shape}")


def check_int(name, x):
    """Require an integer ndarray (token ids, targets); return it unchanged."""
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.integer):
        got = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
        raise TypeError(f"{name}: expected an integer numpy.ndarray, got {got}")
    return x


def check_ids(name, ids, vocab_size):
    """Require an integer ndarray of token ids in ``[0, vocab_size)``; return it unchanged."""
    check_int(name, ids)
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"{name}: expected token ids in [0, {vocab_size}), got values in [{ids.min()}, {ids.max()}]")
    return ids


def check_bool_mask(name, mask, target_shape):
    """Require a boolean mask that broadcasts to ``target_shape`` without growing it."""
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        got = mask.dtype if isinstance(mask, np.ndarray) else type(mask).__name__
        raise TypeError(f"{name}: expected a boolean numpy.ndarray (True = may attend), got {got}")
    try:
        shape = np.broadcast_shapes(mask.shape, tuple(target_shape))
    except ValueError:
        shape = None
    if shape != tuple(target_shape):
        raise ValueError(f"{name}: expected a shape broadcastable to {tuple(target_shape)}, got {mask.shape}")
    return mask


def check_id_list(name, ids):
    """Require a sequence of integer token ids (Python or NumPy ints; not floats, bools or strings); return a list
    of Python ints. ``int(1.7)`` would silently be 1: a float id is a caller's mistake, named here."""
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"{name}: expected a 1-D sequence of integer token ids, got an array of dtype "
                            f"{ids.dtype} and shape {ids.shape}")
        return ids.tolist()
    if isinstance(ids, (str, bytes, dict)) or not hasattr(ids, "__iter__"):
        raise TypeError(f"{name}: expected a sequence of integer token ids, got {type(ids).__name__}")
    out = []
    for i, t in enumerate(ids):
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)):
            raise TypeError(f"{name}[{i}]: expected an integer token id, got {type(t).__name__} {t!r}")
        out.append(int(t))
    return out


def check_count(name, n, minimum=0):
    """Require a Python or NumPy int (not a bool) ``>= minimum``; return it as an int."""
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{name}: expected an int >= {minimum}, got {type(n).__name__}")
    if n < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {n}")
    return int(n)


def check_positive(name, x):
    """Require a finite real number > 0 (an epsilon, a temperature); return it as a float."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a positive real number, got {type(x).__name__}")
    if not (np.isfinite(x) and x > 0):
        raise ValueError(f"{name}: expected a positive finite number, got {x}")
    return float(x)


def check_choice(name, value, choices):
    """Require ``value`` to be one of the strings ``choices``; return it."""
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected one of {', '.join(map(repr, choices))} (a str), "
                        f"got {type(value).__name__} {value!r}")
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_grad(name, g, shape, dtype):
    """Require an upstream gradient with the shape and dtype of the forward output it belongs to; return it."""
    check_float(name, g)
    if g.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype)} (that of the forward pass), got {g.dtype}")
    check_shape(name, g, tuple(shape))
    return g
