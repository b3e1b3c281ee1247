"""Finite-difference gradient checks shared by the tests.

Central differences in float64: the truncation error is O(h^2) and the round-off is about eps*|f|/h. With
h = 1e-6 both are near 1e-10 relative to the gradient's size, so an analytic gradient that is right agrees to
about 1e-8, and a wrong term (a missing factor, a dropped branch) shows up at 1e-2 or worse. ``RTOL_FD = 1e-6``
sits between the two with room on both sides.
"""
import numpy as np

H = 1e-6
RTOL_FD = 1e-6


def numerical_grad(f, x, h=H, indices=None):
    """d f / d x by central differences, for a scalar f of one float64 array x (perturbed in place, restored).

    With ``indices`` (positions in ``x.reshape(-1)``), only those entries are differentiated and the result is
    the 1-D array of their derivatives; otherwise it is the whole gradient, shaped like ``x``.
    """
    if x.dtype != np.float64:
        raise TypeError(f"finite differences need float64, got {x.dtype}")
    flat = x.reshape(-1)
    if not np.shares_memory(flat, x):
        raise ValueError("x must be contiguous: perturbing a copy would not change f")
    idx = np.arange(flat.size) if indices is None else np.asarray(indices)
    grad = np.zeros(idx.size)
    for j, i in enumerate(idx):
        old = flat[i]
        flat[i] = old + h
        fp = f()
        flat[i] = old - h
        fm = f()
        flat[i] = old
        grad[j] = (fp - fm) / (2 * h)
    return grad.reshape(x.shape) if indices is None else grad


def rel_error(a, b):
    """``max |a - b| / max(|a|, |b|, tiny)``: one number per pair of arrays, scale-free."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"shape mismatch: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    scale = max(np.abs(a).max(), np.abs(b).max(), 1e-12)
    return float(np.abs(a - b).max() / scale)


def check_grads(forward_scalar, inputs, analytic, rtol=RTOL_FD):
    """Assert that each analytic gradient matches finite differences.

    forward_scalar: callable () -> float, reading the arrays in ``inputs`` (a dict name -> float64 array).
    analytic: dict name -> gradient array, same keys as ``inputs``.
    """
    assert set(inputs) == set(analytic), f"gradients for {sorted(analytic)} but inputs {sorted(inputs)}"
    for name, x in inputs.items():
        num = numerical_grad(forward_scalar, x)
        err = rel_error(analytic[name], num)
        assert err < rtol, f"d/d{name}: relative error {err:.2e} >= {rtol:.0e}"
