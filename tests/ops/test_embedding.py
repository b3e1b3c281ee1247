"""reference/ops/embedding.py against finite differences, torch autograd, random shapes and bad inputs."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reference.gradcheck import check_grads, rel_error
from reference.ops import embedding

# float64 vs torch: the forward is a copy (exact); dE sums a few upstream rows in possibly another order (~1 ulp).
TOL64 = 1e-12
# float32 vs torch float32: the same sums rounded to float32 (eps 1.2e-7) over at most a few dozen repeats.
TOL32 = 1e-5


def torch_embedding(ids, E, dx):
    Et = torch.tensor(E, requires_grad=True)
    xt = torch.nn.functional.embedding(torch.tensor(ids, dtype=torch.int64), Et)
    xt.backward(torch.tensor(dx))
    return xt.detach().numpy(), Et.grad.numpy()


def test_embedding_matches_finite_differences(rng):
    E = rng.standard_normal((6, 4))
    ids = np.array([[0, 3, 3], [5, 0, 3]])     # repeats: 3 three times, 0 twice; 1, 2 and 4 unused
    dx = rng.standard_normal((2, 3, 4))

    def loss():
        return float(np.sum(dx * embedding.forward(ids, E)[0]))

    dE = embedding.backward(dx, embedding.forward(ids, E)[1])
    check_grads(loss, {"E": E}, {"E": dE})
    assert np.all(dE[[1, 2, 4]] == 0)
    np.testing.assert_allclose(dE[3], dx[0, 1] + dx[0, 2] + dx[1, 2], rtol=1e-15)


@pytest.mark.parametrize("dtype, tol", [(np.float64, TOL64), (np.float32, TOL32)])
def test_embedding_matches_torch(dtype, tol, rng):
    E = rng.standard_normal((50, 16)).astype(dtype)
    ids = rng.integers(0, 50, size=(4, 32))
    dx = rng.standard_normal((4, 32, 16)).astype(dtype)
    x, cache = embedding.forward(ids, E)
    dE = embedding.backward(dx, cache)
    x_t, dE_t = torch_embedding(ids, E, dx)
    assert x.dtype == dtype and dE.dtype == dtype
    np.testing.assert_array_equal(x, x_t)      # a lookup is exact
    assert rel_error(dE, dE_t) < tol


@given(lead=st.lists(st.integers(0, 4), min_size=0, max_size=3), V=st.integers(1, 7), C=st.integers(1, 5),
       seed=st.integers(0, 2**16))
def test_embedding_random_shapes_match_torch(lead, V, C, seed):
    rng = np.random.default_rng(seed)
    E = rng.standard_normal((V, C))
    ids = rng.integers(0, V, size=tuple(lead))
    dx = rng.standard_normal((*lead, C))
    x, cache = embedding.forward(ids, E)
    dE = embedding.backward(dx, cache)
    x_t, dE_t = torch_embedding(ids, E, dx)
    assert x.shape == (*lead, C) and dE.shape == E.shape
    np.testing.assert_array_equal(x, x_t)
    assert rel_error(dE, dE_t) < TOL64


def test_embedding_bad_inputs():
    E = np.zeros((5, 3))
    with pytest.raises(ValueError, match=r"ids: expected token ids in \[0, 5\), got values in \[\d+, 5\]"):
        embedding.forward(np.array([1, 5]), E)
    with pytest.raises(ValueError, match=r"ids: expected token ids in \[0, 5\), got values in \[-1, \d+\]"):
        embedding.forward(np.array([-1, 2]), E)
    with pytest.raises(TypeError, match=r"ids: expected an integer numpy.ndarray, got float64"):
        embedding.forward(np.array([1.0]), E)
    with pytest.raises(TypeError, match=r"ids: expected an integer numpy.ndarray, got list"):
        embedding.forward([1, 2], E)
    with pytest.raises(ValueError, match=r"E: expected shape \(\*, \*\), got \(5,\)"):
        embedding.forward(np.array([1]), np.zeros(5))
    with pytest.raises(TypeError, match=r"E: expected dtype float32 or float64, got int64"):
        embedding.forward(np.array([1]), np.zeros((5, 3), dtype=np.int64))
    _, cache = embedding.forward(np.array([[1, 2]]), E)
    with pytest.raises(ValueError, match=r"dx: expected shape \(1, 2, 3\), got \(2, 3\)"):
        embedding.backward(np.zeros((2, 3)), cache)
    with pytest.raises(TypeError, match=r"dx: expected dtype float64 \(that of the forward pass\), got float32"):
        embedding.backward(np.zeros((1, 2, 3), np.float32), cache)
