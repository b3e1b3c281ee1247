"""reference/ops/cross_entropy.py against finite differences, torch autograd, random shapes, extremes and bad inputs."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reference.gradcheck import check_grads, rel_error
from reference.ops import cross_entropy

# float64 vs torch: the same log-sum-exp in double; only summation order differs (a few ulps of the loss).
TOL64 = 1e-12
# float32 vs torch float32: the loss is a mean of N log-sum-exps, each a few float32 ulps (eps 1.2e-7) off, and
# the gradient is a softmax (a few ulps); 1e-5 relative leaves room for summation order and still catches any
# wrong term, which errs by at least 1/N of the loss.
TOL32 = 1e-5


def torch_ce(logits, targets, ignore_index, dloss):
    lt = torch.tensor(logits, requires_grad=True)
    V = logits.shape[-1]
    ii = -100 if ignore_index is None else ignore_index
    loss = torch.nn.functional.cross_entropy(lt.reshape(-1, V), torch.tensor(targets.reshape(-1), dtype=torch.int64),
                                             ignore_index=ii)
    loss.backward(torch.tensor(dloss, dtype=lt.dtype))
    return loss.detach().numpy(), lt.grad.numpy()


@pytest.mark.parametrize("shape, ignore", [((5, 7), None), ((2, 3, 4), None), ((2, 6, 5), 1), ((1, 3), None)])
def test_cross_entropy_matches_finite_differences(shape, ignore, rng):
    logits = rng.standard_normal(shape)
    targets = rng.integers(0, shape[-1], size=shape[:-1])
    dloss = rng.standard_normal()              # random upstream gradient

    def loss():
        return float(dloss * cross_entropy.forward(logits, targets, ignore)[0])

    _, cache = cross_entropy.forward(logits, targets, ignore)
    check_grads(loss, {"logits": logits}, {"logits": cross_entropy.backward(dloss, cache)})


@pytest.mark.parametrize("dtype, tol", [(np.float64, TOL64), (np.float32, TOL32)])
@pytest.mark.parametrize("ignore", [None, 2, -100])
def test_cross_entropy_matches_torch(dtype, tol, ignore, rng):
    logits = (3 * rng.standard_normal((4, 8, 11))).astype(dtype)
    targets = rng.integers(0, 11, size=(4, 8))
    if ignore is not None:
        targets[rng.random(targets.shape) < 0.3] = ignore
    loss, cache = cross_entropy.forward(logits, targets, ignore)
    dlogits = cross_entropy.backward(np.array(0.7, dtype=dtype), cache)
    loss_t, dlogits_t = torch_ce(logits, targets, ignore, 0.7)
    assert loss.shape == () and loss.dtype == dtype and dlogits.dtype == dtype
    assert rel_error(loss, loss_t) < tol
    assert rel_error(dlogits, dlogits_t) < tol
    if ignore is not None:
        assert np.all(dlogits[targets == ignore] == 0)


@given(
    lead=st.lists(st.integers(0, 4), min_size=0, max_size=3),
    V=st.integers(1, 9),
    p_ignore=st.sampled_from([0.0, 0.5]),
    seed=st.integers(0, 2**16),
)
def test_cross_entropy_random_shapes_match_torch(lead, V, p_ignore, seed):
    rng = np.random.default_rng(seed)
    logits = 5 * rng.standard_normal((*lead, V))
    targets = rng.integers(0, V, size=tuple(lead))
    targets[rng.random(targets.shape) < p_ignore] = -1
    loss, cache = cross_entropy.forward(logits, targets, ignore_index=-1)
    dlogits = cross_entropy.backward(1.0, cache)
    assert dlogits.shape == logits.shape
    if (targets != -1).sum() == 0:             # documented convention: nothing to average -> 0 and 0
        assert loss == 0 and np.all(dlogits == 0)
        return
    loss_t, dlogits_t = torch_ce(logits, targets, -1, 1.0)
    assert rel_error(loss, loss_t) < TOL64
    assert rel_error(dlogits, dlogits_t) < TOL64


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_is_stable_for_logits_of_1e4(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [1e4, 1e4, 1e4]], dtype=dtype)
    targets = np.array([1, 2, 0])
    loss, cache = cross_entropy.forward(logits, targets)
    dlogits = cross_entropy.backward(1.0, cache)
    # exact: row 0 costs 2e4, row 1 costs log 2, row 2 costs log 3
    expected = (2e4 + np.log(2) + np.log(3)) / 3
    assert np.isfinite(loss) and abs(float(loss) - expected) / expected < 1e-6
    assert np.all(np.isfinite(dlogits))
    loss_t, dlogits_t = torch_ce(logits, targets, None, 1.0)
    assert rel_error(loss, loss_t) < TOL32 and rel_error(dlogits, dlogits_t) < TOL32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_all_ignored_or_empty_gives_zero(dtype, rng):
    logits = rng.standard_normal((3, 5)).astype(dtype)
    loss, cache = cross_entropy.forward(logits, np.full(3, 7), ignore_index=7)
    assert loss.shape == () and loss.dtype == dtype and loss == 0
    d = cross_entropy.backward(1.0, cache)
    assert d.shape == (3, 5) and d.dtype == dtype and np.all(d == 0)
    loss, cache = cross_entropy.forward(np.zeros((0, 4), dtype=dtype), np.zeros(0, dtype=np.int64))
    assert loss == 0 and cross_entropy.backward(1.0, cache).shape == (0, 4)


def test_cross_entropy_bad_inputs():
    logits = np.zeros((2, 3))
    t = np.array([0, 2])
    with pytest.raises(ValueError, match=r"targets: expected class indices in \[0, 2\] \(or ignore_index=None\), got 3"):
        cross_entropy.forward(logits, np.array([0, 3]))
    with pytest.raises(ValueError, match=r"targets: expected class indices in \[0, 2\] \(or ignore_index=-100\), got -1"):
        cross_entropy.forward(logits, np.array([-1, 0]), ignore_index=-100)
    with pytest.raises(ValueError, match=r"targets: expected shape \(2,\), got \(2, 1\)"):
        cross_entropy.forward(logits, t[:, None])
    with pytest.raises(TypeError, match=r"targets: expected an integer numpy.ndarray, got float64"):
        cross_entropy.forward(logits, t.astype(float))
    with pytest.raises(TypeError, match=r"logits: expected dtype float32 or float64, got int64"):
        cross_entropy.forward(np.zeros((2, 3), dtype=np.int64), t)
    with pytest.raises(TypeError, match=r"logits: expected dtype float32 or float64, got complex128"):
        cross_entropy.forward(np.zeros((2, 3), dtype=complex), t)
    with pytest.raises(ValueError, match=r"logits: expected at least 1 dimension\(s\), got shape \(\)"):
        cross_entropy.forward(np.array(1.0), np.array(0))
    with pytest.raises(TypeError, match=r"ignore_index: expected an int or None, got float"):
        cross_entropy.forward(logits, t, ignore_index=-1.0)
    _, cache = cross_entropy.forward(logits, t)
    with pytest.raises(ValueError, match=r"dloss: expected shape \(\), got \(1,\)"):
        cross_entropy.backward(np.ones(1), cache)
    with pytest.raises(TypeError, match=r"dloss: expected a real number or a 0-d float ndarray, got str"):
        cross_entropy.backward("1", cache)


def test_cross_entropy_with_no_classes_says_so():
    # V = 0 used to be reported as "class indices in [0, -1]"
    with pytest.raises(ValueError, match=r"logits: expected at least one class \(a last axis V >= 1\), got shape "
                                         r"\(2, 0\)"):
        cross_entropy.forward(np.zeros((2, 0)), np.zeros(2, dtype=np.int64))
