"""reference/inference/decoding.py: the KV cache against gpt.forward's full recomputation, and the decoding strategies."""
import itertools

import numpy as np
import pytest

from reference import tree
from reference.inference import decoding as gen
from reference.models import gpt
from reference.tokenizers.char import CharTokenizer

# Cached and full computations do the same float64 operations on the same numbers, in a different grouping
# (one row instead of a batch, masked zeros in the attention sums): round-off of ~1e-16 relative per op,
# ~1e-14 on logits of size ~10 after a few layers. 1e-12 is a thousand times that, and any modelling error
# (a shifted position, an attended pad, a missing causal edge) moves logits by 1e-3 or more.
ATOL = 1e-12


def _tiny(positional="learned", V=11, block_size=24, seed=0):
    """A tiny GPT with random parameters large enough for peaked attention and logits (std 0.02 would make
    every attention row nearly uniform and hide masking mistakes)."""
    config = gpt.GPTConfig(vocab_size=V, block_size=block_size, n_layer=2, n_head=2, d_model=8,
                           positional=positional)
    rng = np.random.default_rng(seed)
    flat = tree.flatten(gpt.init_params(config, rng, dtype=np.float64))
    for name, a in flat.items():
        base = 1.0 if name.endswith("gamma") else 0.0
        flat[name] = base + rng.normal(0.0, 0.5, size=a.shape)
    return tree.unflatten(flat), config


@pytest.fixture(scope="module", params=["learned", "sinusoidal"])
def model(request):
    return _tiny(request.param)


def _full_last_logits(params, config, seq):
    """gpt.forward on one unpadded sequence: the logits of its last position, (V,)."""
    logits, _ = gpt.forward(params, config, np.array([seq], dtype=np.int64))
    return logits[0, -1]


@pytest.mark.parametrize("T0", [1, 5, 13])
def test_cached_logits_equal_full_recompute(model, T0, rng):
    params, config = model
    B = 3
    ids = rng.integers(0, config.vocab_size, size=(B, config.block_size))
    logits, cache = gen.forward_cached(params, config, ids[:, :T0])
    full, _ = gpt.forward(params, config, ids[:, :T0])
    np.testing.assert_allclose(logits, full, rtol=0, atol=ATOL)
    for t in range(T0, config.block_size):
        logits, cache = gen.forward_cached(params, config, ids[:, t:t + 1], cache)
        full, _ = gpt.forward(params, config, ids[:, :t + 1])
        assert cache.length == t + 1 and cache.k[0].shape == (B, config.n_head, t + 1, config.d_k)
        np.testing.assert_allclose(logits[:, 0], full[:, -1], rtol=0, atol=ATOL)


def test_left_padded_batch_equals_each_row_alone(model, rng):
    params, config = model
    prompts = [list(rng.integers(0, config.vocab_size, size=n)) for n in (1, 4, 9, 6)]
    ids, mask = gen.left_pad(prompts, pad_id=7)
    assert ids.shape == (4, 9) and mask.sum(axis=1).tolist() == [1, 4, 9, 6]
    logits, cache = gen.forward_cached(params, config, ids, attention_mask=mask)
    seqs = [list(p) for p in prompts]
    for b, p in enumerate(prompts):
        full, _ = gpt.forward(params, config, np.array([p]))
        np.testing.assert_allclose(logits[b, mask[b]], full[0], rtol=0, atol=ATOL)
    for _ in range(config.block_size - 9):
        nxt = rng.integers(0, config.vocab_size, size=(4, 1))
        logits, cache = gen.forward_cached(params, config, nxt, cache)
        for b in range(4):
            seqs[b].append(int(nxt[b, 0]))
            np.testing.assert_allclose(logits[b, 0], _full_last_logits(params, config, seqs[b]), rtol=0, atol=ATOL)
    assert cache.next_pos.tolist() == [len(s) for s in seqs]


def test_padding_id_and_masked_steps_do_not_leak(model, rng):
    params, config = model
    prompts = [[1, 2, 3], [4]]
    ids0, mask = gen.left_pad(prompts, pad_id=0)
    ids5, _ = gen.left_pad(prompts, pad_id=5)
    a, _ = gen.forward_cached(params, config, ids0, attention_mask=mask)
    b, cache = gen.forward_cached(params, config, ids5, attention_mask=mask)
    np.testing.assert_allclose(a[mask], b[mask], rtol=0, atol=ATOL)
    # a masked step (a finished row in generate) leaves that row's later logits as if it never happened
    _, c1 = gen.forward_cached(params, config, np.array([[9], [9]]), cache, attention_mask=np.array([[True], [False]]))
    l2, _ = gen.forward_cached(params, config, np.array([[3], [3]]), c1)
    np.testing.assert_allclose(l2[1, 0], _full_last_logits(params, config, [4, 3]), rtol=0, atol=ATOL)
    np.testing.assert_allclose(l2[0, 0], _full_last_logits(params, config, [1, 2, 3, 9, 3]), rtol=0, atol=ATOL)


def test_forward_cached_does_not_modify_its_cache(model):
    params, config = model
    _, cache = gen.forward_cached(params, config, np.array([[1, 2, 3]]))
    before = [k.copy() for k in cache.k], cache.key_mask.copy(), cache.next_pos.copy()
    gen.forward_cached(params, config, np.array([[4]]), cache)
    for k, k0 in zip(cache.k, before[0]):
        np.testing.assert_array_equal(k, k0)
    np.testing.assert_array_equal(cache.key_mask, before[1])
    np.testing.assert_array_equal(cache.next_pos, before[2])


def test_float32_cache_matches_float32_full_forward():
    params, config = _tiny()
    params32 = tree.unflatten({k: v.astype(np.float32) for k, v in tree.flatten(params).items()})
    ids = np.arange(10, dtype=np.int64).reshape(1, 10) % config.vocab_size
    logits, cache = gen.forward_cached(params32, config, ids[:, :6])
    for t in range(6, 10):
        logits, cache = gen.forward_cached(params32, config, ids[:, t:t + 1], cache)
        full, _ = gpt.forward(params32, config, ids[:, :t + 1])
        assert logits.dtype == np.float32
        # float32: the same ops in another grouping; eps32 ~ 6e-8 relative on logits of size ~10, a few ulps
        np.testing.assert_allclose(logits[:, 0], full[:, -1], rtol=0, atol=1e-4)


def test_greedy_generation_equals_argmax_of_full_forward(model):
    params, config = model
    prompts = [[3, 1, 4, 1, 5], [9], [2, 6]]
    outs = gen.generate(params, config, prompts, max_new_tokens=8, temperature=0)
    for p, out in zip(prompts, outs):
        seq = list(p)
        for _ in range(8):
            seq.append(int(np.argmax(_full_last_logits(params, config, seq))))
        assert out == seq[len(p):]


@pytest.mark.parametrize("kw", [dict(temperature=0), dict(temperature=0.8, top_k=4), dict(temperature=1.3, top_p=0.7)])
def test_cache_and_no_cache_generate_the_same_tokens(model, kw):
    params, config = model
    prompts = [[3, 1, 4, 1, 5], [9], [2, 6]]
    with_cache = gen.generate(params, config, prompts, 10, rng=42, use_cache=True, **kw)
    without = gen.generate(params, config, prompts, 10, rng=42, use_cache=False, **kw)
    assert with_cache == without


def test_sampling_is_reproducible(model):
    params, config = model
    a = gen.generate(params, config, [[1, 2]], 15, temperature=1.0, rng=7)
    b = gen.generate(params, config, [[1, 2]], 15, temperature=1.0, rng=np.random.default_rng(7))
    c = gen.generate(params, config, [[1, 2]], 15, temperature=1.0, rng=8)
    assert a == b
    assert a != c   # 15 draws over 11 tokens: two seeds agreeing everywhere has probability far below 1e-6


def test_stop_tokens_end_each_row(model):
    params, config = model
    prompts = [[3, 1, 4, 1, 5], [9], [2, 6]]
    free = gen.generate(params, config, prompts, 10, temperature=0)
    stop = free[0][2]
    stopped = gen.generate(params, config, prompts, 10, temperature=0, stop_tokens=[stop])
    for f, s in zip(free, stopped):
        expected = f[:f.index(stop) + 1] if stop in f else f
        assert s == expected
    assert len(stopped[0]) <= 3


def test_sample_frequencies_follow_the_filtered_distribution():
    rng = np.random.default_rng(0)
    logits = np.log(np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04]))
    N = 40000
    batch = np.tile(logits, (N, 1))                                              # (N, V)

    def freq(**kw):
        return np.bincount(gen.sample(batch, rng, **kw), minlength=6) / N

    def expected(z):
        p = np.exp(z - z.max())
        return p / p.sum()

    # Each frequency is a binomial mean: std <= sqrt(0.25 / N) = 2.5e-3; 0.015 is 6 std, a wrong distribution
    # (an unapplied temperature, a filter off by one) moves some frequency by 0.04 or more.
    np.testing.assert_allclose(freq(), expected(logits), atol=0.015)
    np.testing.assert_allclose(freq(temperature=0.5), expected(logits / 0.5), atol=0.015)
    f = freq(top_k=3)
    np.testing.assert_allclose(f, np.r_[expected(logits[:3]), 0, 0, 0], atol=0.015)
    assert f[3:].sum() == 0
    f = freq(top_p=0.75)    # 0.4 + 0.25 = 0.65 < 0.75, so the third token (0.15) is the one that reaches p
    np.testing.assert_allclose(f, np.r_[expected(logits[:3]), 0, 0, 0], atol=0.015)
    assert f[3:].sum() == 0
    assert freq(temperature=0)[0] == 1.0


def test_filters_on_known_values():
    z = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    assert np.isfinite(gen.top_p_filter(z, 0.79)).tolist() == [[True, True, False, False]]
    assert np.isfinite(gen.top_p_filter(z, 0.81)).tolist() == [[True, True, True, False]]
    assert np.isfinite(gen.top_p_filter(z, 1e-9)).tolist() == [[True, False, False, False]]
    assert np.isfinite(gen.top_k_filter(z, 2)).tolist() == [[True, True, False, False]]
    tied = np.array([[1.0, 2.0, 2.0, 0.0]])
    assert np.isfinite(gen.top_k_filter(tied, 1)).tolist() == [[False, True, True, False]]
    assert gen.top_k_filter(z.astype(np.float32), 2).dtype == np.float32


def test_beam_width_one_is_greedy(model):
    params, config = model
    greedy = gen.generate(params, config, [[3, 1, 4]], 6, temperature=0)[0]
    (tokens, _), = gen.beam_search(params, config, [3, 1, 4], beam_width=1, max_new_tokens=6)
    assert tokens == greedy


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
def test_exhaustive_beam_search_equals_brute_force(length_penalty):
    V, n, stop = 5, 3, 2
    params, config = _tiny(V=V, block_size=8, seed=3)
    prompt = [1, 4]

    def logp_next(seq):
        z = _full_last_logits(params, config, seq)
        return z - z.max() - np.log(np.exp(z - z.max()).sum())

    # every sequence the decoder can output: n tokens without a stop, or a stop after fewer than n
    candidates = []
    for length in range(1, n + 1):
        for body in itertools.product([t for t in range(V) if t != stop], repeat=length - 1):
            candidates.append(list(body) + [stop])
            if length == n:
                candidates.extend(list(body) + [t] for t in range(V) if t != stop)
    scored = []
    for c in candidates:
        lp = sum(logp_next(prompt + c[:i])[c[i]] for i in range(len(c)))
        scored.append((lp / len(c) ** length_penalty, c))
    best_score, best = max(scored, key=lambda s: s[0])
    hyps = gen.beam_search(params, config, prompt, beam_width=V ** n, max_new_tokens=n,
                           length_penalty=length_penalty, stop_tokens=[stop])
    assert hyps[0][0] == best
    assert abs(hyps[0][1] - best_score) < 1e-12
    assert [h[1] for h in hyps] == sorted((h[1] for h in hyps), reverse=True)


def test_postprocess_strips_special_tokens_and_decodes():
    tok = CharTokenizer.train("abc \n")
    ids = tok.encode("ab c") + [tok.vocab_size - 1]
    assert gen.postprocess(ids, tok, special_ids=[tok.vocab_size - 1]) == "ab c"


def test_bad_inputs_raise(model):
    params, config = model
    with pytest.raises(ValueError, match="block_size"):
        gen.generate(params, config, [[1] * 20], max_new_tokens=6)
    with pytest.raises(ValueError, match="non-empty"):
        gen.generate(params, config, [[1], []], max_new_tokens=2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        gen.generate(params, config, [[1]], max_new_tokens=0)
    with pytest.raises(TypeError, match="boolean"):
        gen.forward_cached(params, config, np.array([[1, 2]]), attention_mask=np.array([[1, 1]]))
    with pytest.raises(ValueError, match="token ids"):
        gen.forward_cached(params, config, np.array([[1, 99]]))
    with pytest.raises(ValueError, match="temperature"):
        gen.sample(np.zeros((1, 3)), np.random.default_rng(0), temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        gen.top_p_filter(np.zeros((1, 3)), 0.0)
    with pytest.raises(ValueError, match="top_k"):
        gen.top_k_filter(np.zeros((1, 3)), 0)
    with pytest.raises(ValueError, match="beam_width"):
        gen.beam_search(params, config, [1], beam_width=0, max_new_tokens=2)
