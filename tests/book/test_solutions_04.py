"""The worked solutions of chapter 4's exercises (chapters/solutions/04_inference.py), checked against reference/."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from reference import tree
from reference.inference import decoding as gen
from reference.models import gpt

_PATH = Path(__file__).resolve().parents[2] / "chapters" / "solutions" / "04_inference.py"
_spec = importlib.util.spec_from_file_location("solutions_04", _PATH)  # the file name starts with a digit
sol = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sol)


def _tiny(dtype=np.float64, seed=0):
    """A tiny GPT whose random weights are large enough for peaked logits (at std 0.02 every logit is ~0 and
    the top two nearly tie, which would make exercise 2's temperature case a coin toss)."""
    config = gpt.GPTConfig(vocab_size=13, block_size=24, n_layer=2, n_head=2, d_model=8)
    rng = np.random.default_rng(seed)
    flat = tree.flatten(gpt.init_params(config, rng, dtype=dtype))
    for name, a in flat.items():
        base = 1.0 if name.endswith("gamma") else 0.0
        flat[name] = (base + rng.normal(0.0, 0.5, size=a.shape)).astype(dtype)
    return tree.unflatten(flat), config


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B, T", [(1, 1), (3, 7)])
def test_kv_cache_bytes_match_a_real_cache(dtype, B, T, rng):
    params, config = _tiny(dtype)
    ids = rng.integers(0, config.vocab_size, size=(B, T))
    _, cache = gen.forward_cached(params, config, ids)
    assert sol.cache_array_bytes(cache) == sol.kv_cache_bytes(config, B, T, dtype)  # exact: a count of bytes


def test_small_model_cache_is_16_mib():
    small = gpt.GPTConfig(vocab_size=319, block_size=128, n_layer=4, n_head=4, d_model=128)
    assert sol.kv_cache_bytes(small, 32, 128) == 16 * 2**20


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_three_roads_to_greedy(seed):
    params, config = _tiny(seed=seed)
    runs = sol.greedy_three_ways(params, config, [1, 2, 3], 12)
    assert len(runs["greedy"]) == 12
    for name in ("top_k=1", "top_p", "temperature"):
        assert runs[name] == runs["greedy"], name


def test_min_p_matches_the_probability_definition(rng):
    logits = rng.normal(0.0, 3.0, size=(6, 50))
    for min_p in (0.0, 0.01, 0.1, 0.5, 0.9, 1.0):
        fast, slow = sol.min_p_filter(logits, min_p), sol.min_p_by_probabilities(logits, min_p)
        np.testing.assert_array_equal(fast, slow)  # same kept set, and kept logits are untouched
        assert np.all(np.isfinite(fast[np.arange(6), logits.argmax(-1)]))  # the top token always survives


def test_min_p_extremes_and_ties():
    logits = np.array([[2.0, 2.0, 1.0, -3.0], [0.5, 0.1, 0.0, 0.3]])
    assert np.array_equal(sol.min_p_filter(logits, 0.0), logits)
    kept = np.isfinite(sol.min_p_filter(logits, 1.0))
    assert kept.tolist() == [[True, True, False, False], [True, False, False, False]]
    # a confident row keeps few tokens, a flat row many, at the same min_p
    confident = np.log(np.array([[0.9, 0.05, 0.03, 0.02]]))
    flat = np.log(np.full((1, 4), 0.25))
    assert np.isfinite(sol.min_p_filter(confident, 0.1)).sum() == 1
    assert np.isfinite(sol.min_p_filter(flat, 0.1)).sum() == 4
    with pytest.raises(ValueError, match="min_p"):
        sol.min_p_filter(logits, 1.5)
