"""reference/ops/label_smoothing.py against PyTorch's cross_entropy(label_smoothing=eps), finite differences, limits."""
import numpy as np
import pytest
import torch

from reference.gradcheck import check_grads, rel_error
from reference.ops import cross_entropy, label_smoothing

# the same log-softmax in float64 on both sides, summed in a different order: a few ulps of the loss
TOL64 = 1e-12
# float32: a mean of log-softmax terms each a few ulps (1.2e-7) off; a wrong term errs by >= eps / V of the loss
TOL32 = 1e-5


def torch_ls(logits, targets, eps, ignore_index, dloss):
    lt = torch.tensor(logits, requires_grad=True)
    V = logits.shape[-1]
    loss = torch.nn.functional.cross_entropy(lt.reshape(-1, V), torch.tensor(targets.reshape(-1), dtype=torch.int64),
                                             ignore_index=-100 if ignore_index is None else ignore_index,
                                             label_smoothing=eps)
    loss.backward(torch.tensor(dloss, dtype=lt.dtype))
    return loss.detach().numpy(), lt.grad.numpy()


@pytest.mark.parametrize("dtype, tol", [(np.float64, TOL64), (np.float32, TOL32)])
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("ignore", [None, 3])
def test_label_smoothing_matches_torch(dtype, tol, eps, ignore, rng):
    logits = (3 * rng.standard_normal((4, 6, 9))).astype(dtype)
    targets = rng.integers(0, 9, size=(4, 6))
    if ignore is not None:
        targets[rng.random(targets.shape) < 0.3] = ignore
    loss, cache = label_smoothing.forward(logits, targets, eps, ignore_index=ignore)
    dlogits = label_smoothing.backward(np.array(0.7, dtype=dtype), cache)
    loss_t, dlogits_t = torch_ls(logits, targets, eps, ignore, 0.7)
    assert loss.shape == () and loss.dtype == dtype and dlogits.dtype == dtype
    assert rel_error(loss, loss_t) < tol
    assert rel_error(dlogits, dlogits_t) < tol
    if ignore is not None:
        assert np.all(dlogits[targets == ignore] == 0)


@pytest.mark.parametrize("shape, eps", [((5, 7), 0.1), ((2, 3, 4), 0.3), ((1, 2), 0.9)])
def test_label_smoothing_matches_finite_differences(shape, eps, rng):
    logits = rng.standard_normal(shape)
    targets = rng.integers(0, shape[-1], size=shape[:-1])
    dloss = rng.standard_normal()
    _, cache = label_smoothing.forward(logits, targets, eps)
    check_grads(lambda: float(dloss * label_smoothing.forward(logits, targets, eps)[0]), {"logits": logits},
                {"logits": label_smoothing.backward(dloss, cache)})


def test_eps_zero_is_cross_entropy(rng):
    logits = rng.standard_normal((3, 5, 8))
    targets = rng.integers(0, 8, size=(3, 5))
    ls, c1 = label_smoothing.forward(logits, targets, 0.0)
    ce, c2 = cross_entropy.forward(logits, targets)
    # the two compute lse - z_t in a different order: a few ulps
    assert abs(float(ls) - float(ce)) < 1e-14
    np.testing.assert_allclose(label_smoothing.backward(1.0, c1), cross_entropy.backward(1.0, c2), rtol=0, atol=1e-16)


def test_the_minimum_is_the_entropy_of_the_smoothed_target():
    # logits with softmax = q: the gradient vanishes and the loss equals H(q), which is > 0
    V, eps = 6, 0.1
    q = np.full(V, eps / V)
    q[2] += 1 - eps
    logits = np.log(q)[None]
    loss, cache = label_smoothing.forward(logits, np.array([2]), eps)
    entropy = -(q * np.log(q)).sum()
    assert abs(float(loss) - entropy) < 1e-14
    # softmax(log q) = q up to a few ulps of probabilities <= 1 (1.1e-16 each)
    assert np.abs(label_smoothing.backward(1.0, cache)).max() < 1e-15
    # pushing the true logit further up raises the loss again: a one-hot prediction is no longer optimal
    sharper = logits.copy()
    sharper[0, 2] += 5
    assert float(label_smoothing.forward(sharper, np.array([2]), eps)[0]) > entropy + 0.3


def test_all_ignored_gives_zero_and_extremes_stay_finite():
    logits = np.zeros((2, 3, 4), np.float32)
    targets = np.full((2, 3), -1)
    loss, cache = label_smoothing.forward(logits, targets, 0.1, ignore_index=-1)
    assert float(loss) == 0 and not label_smoothing.backward(1.0, cache).any()
    big = np.array([[1e4, -1e4, 0.0]], np.float32)          # no exp of a positive number: finite in float32
    loss, cache = label_smoothing.forward(big, np.array([0]), 0.1)
    assert np.isfinite(loss) and np.isfinite(label_smoothing.backward(1.0, cache)).all()


def test_label_smoothing_bad_inputs():
    logits = np.zeros((2, 4))
    with pytest.raises(ValueError, match=r"eps: expected a float in \[0, 1\], got -0.1"):
        label_smoothing.forward(logits, np.zeros(2, np.int64), -0.1)
    with pytest.raises(ValueError, match=r"targets: expected class indices in \[0, 3\]"):
        label_smoothing.forward(logits, np.array([0, 4]), 0.1)
    with pytest.raises(ValueError, match=r"targets: expected shape \(2,\), got \(3,\)"):
        label_smoothing.forward(logits, np.zeros(3, np.int64), 0.1)
    with pytest.raises(TypeError, match="targets: expected an integer numpy.ndarray"):
        label_smoothing.forward(logits, np.zeros(2), 0.1)
