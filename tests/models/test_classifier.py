"""The tiny Transformer classifier (reference/models/classifier.py): gradients, padding, order, learnability, bad inputs."""
import numpy as np
import pytest

from reference.gradcheck import check_grads
from reference.models import classifier


def _leaves(tree, path=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaves(v, f"{path}/{k}")
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _leaves(v, f"{path}/{i}")
    else:
        yield path, tree


def _setup(rng, norm="pre", dtype=np.float64, B=3, T=5):
    config = classifier.ClassifierConfig(vocab_size=7, n_classes=3, max_len=6, d_model=8, n_head=2, n_layer=2,
                                         d_ff=12, norm=norm, activation="gelu")
    params = classifier.init_params(config, rng, dtype)
    for _, p in _leaves(params):                 # random biases, gains and head: every term of the backward counts
        p += 0.1 * rng.standard_normal(p.shape).astype(dtype)
    ids = rng.integers(0, 7, size=(B, T))
    mask = np.ones((B, T), bool)
    mask[1, 3:] = False                          # a padded sequence
    return config, params, ids, mask


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_gradients_match_finite_differences(norm, rng):
    config, params, ids, mask = _setup(rng, norm)
    logits, cache = classifier.forward(params, config, ids, mask)
    dlogits = rng.standard_normal(logits.shape)     # a random upstream gradient
    grads = classifier.backward(dlogits, cache)
    # The key bias adds q . bk to every score of a query's row, which softmax ignores: its gradient is exactly 0
    # in real arithmetic (round-off ~1e-17 here), and a relative finite-difference error of it means nothing.
    inputs = {k: v for k, v in _leaves(params) if not k.endswith("/bk")}
    analytic = {k: v for k, v in _leaves(grads) if not k.endswith("/bk")}
    assert all(np.abs(g).max() < 1e-12 for k, g in _leaves(grads) if k.endswith("/bk"))
    check_grads(lambda: float(np.sum(classifier.forward(params, config, ids, mask)[0] * dlogits)), inputs, analytic)


def test_padding_does_not_change_the_logits(rng):
    config, params, ids, mask = _setup(rng)
    logits, _ = classifier.forward(params, config, ids, mask)
    ids2 = ids.copy()
    ids2[1, 3:] = (ids2[1, 3:] + 1) % 7             # other tokens under the padding
    logits2, _ = classifier.forward(params, config, ids2, mask)
    short, _ = classifier.forward(params, config, ids[1:2, :3], mask[1:2, :3])
    # float64: only the order of some sums changes
    assert np.allclose(logits, logits2, rtol=0, atol=1e-12)
    assert np.allclose(logits[1], short[0], rtol=0, atol=1e-12)


def test_positions_make_the_model_see_order(rng):
    config, params, ids, mask = _setup(rng)
    mask[:] = True
    rev = ids[:, ::-1].copy()
    with_pe, _ = classifier.forward(params, config, ids, mask)
    with_pe_rev, _ = classifier.forward(params, config, rev, mask)
    assert np.abs(with_pe - with_pe_rev).max() > 1e-3
    blind = classifier.ClassifierConfig(**{**config.__dict__, "positional": False})
    no_pe, _ = classifier.forward(params, blind, ids, mask)
    no_pe_rev, _ = classifier.forward(params, blind, rev, mask)
    # permutation invariance is exact in real arithmetic; float64 sums in another order differ by ~1e-16
    assert np.allclose(no_pe, no_pe_rev, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(dtype, rng):
    config, params, ids, mask = _setup(rng, dtype=dtype)
    logits, cache = classifier.forward(params, config, ids, mask)
    assert logits.dtype == dtype and logits.shape == (3, 3)
    assert all(g.dtype == dtype for _, g in _leaves(classifier.backward(np.ones_like(logits), cache)))


def test_learns_an_order_task(rng):
    # Class = whether token 1 comes before token 2: the same bag of words in both classes, so only a model that
    # sees positions can learn it. 64 sequences of length 4, trained to 100 % training accuracy.
    N, T = 64, 4
    ids = rng.integers(3, 6, size=(N, T))
    y = rng.integers(0, 2, N)
    for n in range(N):
        i, j = rng.choice(T, 2, replace=False)
        first, second = (1, 2) if y[n] == 0 else (2, 1)
        ids[n, min(i, j)], ids[n, max(i, j)] = first, second
    mask = np.ones((N, T), bool)
    config = classifier.ClassifierConfig(vocab_size=6, n_classes=2, max_len=T, d_model=16, n_head=2, n_layer=1,
                                         d_ff=32)
    params = classifier.init_params(config, np.random.default_rng(1))
    best, history = classifier.train(params, config, ids, mask, y, np.random.default_rng(2), steps=300,
                                     batch_size=32, lr=1e-2)
    assert history["loss"][-1] < 0.1 * history["loss"][0]
    assert classifier.accuracy(best, config, ids, mask, y) == 1.0


def test_train_keeps_the_best_dev_parameters(rng):
    config, params, ids, mask = _setup(rng, B=8, T=5)
    y = rng.integers(0, 3, 8)
    best, history = classifier.train(params, config, ids, mask, y, np.random.default_rng(0), steps=6,
                                     batch_size=4, eval_every=2, dev=(ids, mask, y))
    assert [s for s, _ in history["dev"]] == [2, 4, 6]
    assert classifier.accuracy(best, config, ids, mask, y) == max(a for _, a in history["dev"])


def test_bad_inputs(rng):
    config, params, ids, mask = _setup(rng)
    with pytest.raises(ValueError, match="at most max_len = 6"):
        classifier.forward(params, config, np.zeros((1, 7), np.int64), np.ones((1, 7), bool))
    with pytest.raises(ValueError, match="at least one real token"):
        classifier.forward(params, config, ids, np.zeros_like(mask))
    with pytest.raises(TypeError, match="mask: expected a boolean"):
        classifier.forward(params, config, ids, mask.astype(int))
    with pytest.raises(ValueError, match=r"ids: expected token ids in \[0, 7\)"):
        classifier.forward(params, config, ids + 7, mask)
    with pytest.raises(TypeError, match="ids: expected an integer"):
        classifier.forward(params, config, ids.astype(float), mask)
    with pytest.raises(ValueError, match="not divisible by n_head"):
        classifier.ClassifierConfig(vocab_size=5, n_classes=2, max_len=4, d_model=6, n_head=4)
    with pytest.raises(ValueError, match="n_classes: expected an integer >= 2"):
        classifier.ClassifierConfig(vocab_size=5, n_classes=1, max_len=4)
    params["head"]["b"][0] = np.inf
    with pytest.raises(FloatingPointError, match="lower lr"), np.errstate(invalid="ignore"):
        classifier.train(params, config, ids, mask, np.zeros(3, np.int64), rng, steps=1)
