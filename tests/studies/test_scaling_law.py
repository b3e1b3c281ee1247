"""Checks of reference/studies/scaling_law.py: the power-law fit on synthetic data, and the timed training run.

Budget: under 10 s on one core (the training runs use a 1-block, d=16 GPT on a synthetic token stream).
"""
import numpy as np
import pytest

from reference import tree
from reference.models import gpt
from reference.studies import scaling_law


def test_fit_recovers_an_exact_power_law():
    n = np.array([1e4, 3e4, 1e5, 3e5, 1e6])
    loss = 7.0 * n ** -0.076                                  # Kaplan et al.'s alpha_N = 0.076
    a, b, r2 = scaling_law.fit_power_law(n, loss)
    # exact data: the least-squares line goes through every point; only round-off (~1e-15) is left
    assert b == pytest.approx(-0.076, abs=1e-12)
    assert a == pytest.approx(np.log(7.0), abs=1e-12)
    assert r2 == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(scaling_law.power_law(n, a, b), loss, rtol=1e-12)


def test_fit_on_noisy_data(rng):
    n = np.logspace(3, 7, 40)
    loss = 5.0 * n ** -0.1 * np.exp(0.01 * rng.standard_normal(n.size))   # 1 % multiplicative noise
    a, b, r2 = scaling_law.fit_power_law(n, loss)
    # the slope's standard error is 0.01 / (std(log n) sqrt(40)) ~ 6e-4; 5e-3 is 8 standard errors
    assert b == pytest.approx(-0.1, abs=5e-3)
    assert 0.9 < r2 < 1.0


def test_fit_is_the_least_squares_line(rng):
    n = np.array([2.0, 5.0, 11.0, 40.0])
    loss = np.array([3.0, 2.1, 2.5, 1.2])
    a, b, _ = scaling_law.fit_power_law(n, loss)
    b_ref, a_ref = np.polyfit(np.log(n), np.log(loss), 1)   # an independent least-squares solver
    assert (a, b) == pytest.approx((a_ref, b_ref), abs=1e-12)


@pytest.mark.parametrize("n, loss, match", [
    ([1e4], [2.0], "two different sizes"),
    ([1e4, 1e4], [2.0, 1.9], "two different sizes"),
    ([1e4, 2e4], [2.0], "one length"),
    ([1e4, -2e4], [2.0, 1.0], "positive"),
    ([1e4, 2e4], [2.0, 0.0], "positive"),
    ([1e4, 2e4], [2.0, np.nan], "positive"),
])
def test_fit_rejects_bad_input(n, loss, match):
    with pytest.raises(ValueError, match=match):
        scaling_law.fit_power_law(n, loss)


# ---------------------------------------------------------------------------------------------------------------

V = 7
CONFIG = gpt.GPTConfig(vocab_size=V, block_size=8, n_layer=1, n_head=2, d_model=16)


def stream(rng, n=4000):
    """A learnable token stream: each token is the previous one plus 1 or 2 (mod V), at random."""
    return (np.cumsum(rng.integers(1, 3, size=n)) % V).astype(np.int32)


def test_train_run_learns_and_reports(rng):
    ids = stream(rng)
    r = scaling_law.train_run(CONFIG, ids[:3000], ids[3000:], 60, 8, 1e-2, warmup=5, eval_every=30)
    assert len(r["train_loss"]) == len(r["grad_norm"]) == 60
    assert [s for s, _ in r["val"]] == [30, 60]
    assert r["tokens"] == 60 * 8 * 8 and r["seconds"] > 0 and r["diverged_at"] is None
    # from ln 7 = 1.95 (uniform) towards ln 2 = 0.69 (two equally likely successors): well below 1.5 after 60 steps
    assert r["val"][-1][1] < 1.5 < r["train_loss"][0]
    blocks = 12 * 16 ** 2 + 13 * 16                              # reference/studies/counting.py's per-block count, L = 1
    assert r["n_matmul"] == blocks + V * 16
    assert r["n_params"] == blocks + V * 16 + 8 * 16 + 2 * 16    # plus wpe and ln_f


def test_clipping_bounds_the_sgd_step(rng):
    ids = stream(rng)
    runs = {clip: scaling_law.train_run(CONFIG, ids[:3000], ids[3000:], 1, 8, 0.5, optimizer="sgd", grad_clip=clip,
                                    min_lr_ratio=1.0, seed=3)
            for clip in (None, 1e-3)}
    init = gpt.init_params(CONFIG, np.random.default_rng(3), dtype=np.float32)
    moved = {clip: np.sqrt(sum(float(np.sum((a.astype(np.float64) - b) ** 2)) for a, b in
                               zip(tree.flatten(r["params"]).values(), tree.flatten(init).values())))
             for clip, r in runs.items()}
    assert runs[None]["grad_norm"][0] == runs[1e-3]["grad_norm"][0] > 1e-3   # the norm before clipping
    # SGD moves the parameters by lr * ||g||; clipped, ||g|| = c ||g|| / (||g|| + 1e-6) (torch's formula);
    # float32 round-off in the update is ~1e-7 relative, so 1e-4 is ample and a wrong factor is not
    norm = runs[None]["grad_norm"][0]
    assert moved[1e-3] == pytest.approx(0.5 * 1e-3 * norm / (norm + 1e-6), rel=1e-4)
    assert moved[None] == pytest.approx(0.5 * norm, rel=1e-4)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # the overflows on the way to a non-finite loss
def test_a_diverging_run_stops(rng):
    ids = stream(rng)
    r = scaling_law.train_run(CONFIG, ids[:3000], ids[3000:], 50, 8, 1e6, optimizer="sgd", grad_clip=None)
    assert r["diverged_at"] is not None and len(r["train_loss"]) == r["diverged_at"] - 1
    assert r["val"] == []


def test_train_run_bad_arguments(rng):
    ids = stream(rng)
    for kwargs, match in [({"optimizer": "lion"}, "optimizer"), ({"grad_clip": 0.0}, "grad_clip")]:
        with pytest.raises(ValueError, match=match):
            scaling_law.train_run(CONFIG, ids, ids, 1, 2, 1e-3, **kwargs)
    with pytest.raises(ValueError, match="steps"):
        scaling_law.train_run(CONFIG, ids, ids, 0, 2, 1e-3)
