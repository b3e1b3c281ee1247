"""Finite-difference gradient checks shared by the tests.

Central differences in float64: the truncation error is O(h^2) and the round-off is about eps*|f|/h. With
h = 1e-6 both are near 1e-10 relative to the gradient's size, so an analytic gradient that is right agrees to
about 1e-8, and a wrong term (a missing factor, a dropped branch) shows up at 1e-2 or worse. ``RTOL_FD = 1e-6``
sits between the two with room on both sides.
"""
import numpy as np

H = 1e-6
RTOL_FD = 1e-6


def numerical_grad(f, x, h=H):
    """d f / d x by central differences, for a scalar f of one float64 array x (perturbed in place, restored)."""
    if x.dtype != np.float64:
        raise TypeError(f"finite differences need float64, got {x.dtype}")
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fp = f()
        flat[i] = old - h
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * h)
    return grad


def rel_error(a, b):
    """max |a - b| / max(|a|, |b|, tiny): one number per pair of arrays, scale-free."""
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
