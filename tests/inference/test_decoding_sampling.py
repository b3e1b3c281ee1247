"""reference/inference/decoding.py, the sampling side: no made-up numbers from bad settings or bad logits.

Every check here is an input that used to give a token anyway (NaN temperature: token 0 forever; a tiny temperature:
other tokens than greedy; NaN logits: token 0; a +inf logit: not its token), or a Python error instead of a message.
"""
import numpy as np
import pytest

from reference.inference import decoding as gen
from reference.tokenizers.char import CharTokenizer
from tests.inference.test_decoding import _tiny


@pytest.fixture(scope="module")
def model():
    return _tiny()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("temperature", [1e-3, 1e-45, 1e-300, 5e-324])
def test_tiny_temperatures_are_greedy(dtype, temperature):
    # softmax(z / t) tends to the one-hot of argmax z as t -> 0; dividing first overflowed to inf - inf = NaN
    logits = np.random.default_rng(1).normal(0, 3, size=(64, 50)).astype(dtype)
    if temperature == 1e-3:
        logits *= 100          # gaps of ~0.01 become 10 / 1e-3: greedy up to e^-10000
    got = gen.sample(logits, np.random.default_rng(0), temperature=temperature)
    np.testing.assert_array_equal(got, np.argmax(logits, axis=-1))


def test_generation_at_a_tiny_temperature_is_greedy(model):
    params, config = model
    greedy = gen.generate(params, config, [[1, 2], [3]], 8, temperature=0)
    assert gen.generate(params, config, [[1, 2], [3]], 8, temperature=1e-45, rng=5) == greedy


@pytest.mark.parametrize("temperature", [float("nan"), float("inf"), -1.0])
def test_non_finite_or_negative_temperature_is_refused(model, temperature):
    params, config = model
    with pytest.raises(ValueError, match=r"temperature: expected a finite number >= 0"):
        gen.sample(np.zeros((1, 4)), np.random.default_rng(0), temperature=temperature)
    with pytest.raises(ValueError, match="temperature"):
        gen.generate(params, config, [[1]], 3, temperature=temperature)


@pytest.mark.parametrize("temperature", [0, 1.0])
def test_nan_logits_have_no_distribution(temperature):
    for logits in (np.full((2, 4), np.nan), np.array([[0.0, 1.0, 2.0], [0.0, np.nan, 1.0]])):
        with pytest.raises(ValueError, match=r"logits: expected no NaN"):
            gen.sample(logits, np.random.default_rng(0), temperature=temperature)
    with pytest.raises(ValueError, match="all -inf"):
        gen.sample(np.array([[0.0, 1.0], [-np.inf, -np.inf]]), np.random.default_rng(0), temperature=temperature)


@pytest.mark.parametrize("kw", [{}, {"temperature": 0}, {"temperature": 0.5}, {"temperature": 1e-45},
                                {"top_k": 2}, {"top_p": 0.5}, {"top_p": 1.0, "top_k": 4}])
def test_an_infinite_logit_takes_all_the_probability(kw):
    logits = np.tile([0.0, np.inf, 0.0, 0.0], (200, 1))
    assert (gen.sample(logits, np.random.default_rng(0), **kw) == 1).all()


def test_infinite_logits_share_the_probability():
    logits = np.tile([np.inf, 5.0, np.inf, -np.inf], (4000, 1))
    freq = np.bincount(gen.sample(logits, np.random.default_rng(0)), minlength=4) / 4000
    # binomial std sqrt(0.25 / 4000) = 0.008; 0.04 is 5 std
    np.testing.assert_allclose(freq, [0.5, 0, 0.5, 0], atol=0.04)
    assert freq[1] == freq[3] == 0


def test_filters_keep_infinite_logits():
    z = np.array([[0.0, np.inf, 1.0, -np.inf]])
    assert np.isfinite(gen.top_p_filter(z, 0.5)).tolist() == [[False, False, False, False]]
    assert (gen.top_p_filter(z, 0.5) == [[-np.inf, np.inf, -np.inf, -np.inf]]).all()
    with pytest.raises(ValueError, match="NaN"):
        gen.top_k_filter(np.array([[0.0, np.nan]]), 1)


@pytest.mark.parametrize("kw, error, message", [
    ({"temperature": "0.5"}, TypeError, "temperature: expected a number, got str '0.5'"),
    ({"temperature": None}, TypeError, "temperature: expected a number, got NoneType"),
    ({"top_k": True}, TypeError, "top_k: expected a positive int, got bool True"),
    ({"top_k": 2.0}, TypeError, "top_k: expected a positive int, got float 2.0"),
    ({"top_k": 0}, ValueError, "top_k: expected a positive int, got 0"),
    ({"top_p": "0.9"}, TypeError, "top_p: expected a number, got str"),
    ({"top_p": float("nan")}, ValueError, r"top_p: expected a number in \(0, 1\], got nan"),
    ({"top_p": True}, TypeError, "top_p: expected a number, got bool"),
])
def test_bad_settings_name_what_was_expected(model, kw, error, message):
    params, config = model
    with pytest.raises(error, match=message):
        gen.sample(np.zeros((1, 4)), np.random.default_rng(0), **kw)
    with pytest.raises(error, match=message):
        gen.generate(params, config, [[1]], 2, **kw)


def test_float_token_ids_are_refused(model):
    params, config = model
    tok = CharTokenizer.train("abc")
    with pytest.raises(TypeError, match=r"ids\[1\]: expected an integer token id, got float 1.7"):
        tok.decode([0, 1.7])
    with pytest.raises(TypeError, match="dtype float64"):
        tok.decode(np.array([0.0, 1.0]))
    with pytest.raises(TypeError, match=r"prompts\[0\]\[1\]: expected an integer token id, got float 2.5"):
        gen.generate(params, config, [[1, 2.5]], 2)
    with pytest.raises(TypeError, match=r"prompts\[0\]\[0\]: expected an integer token id, got bool"):
        gen.generate(params, config, [[True]], 2)
    with pytest.raises(TypeError, match="prompt"):
        gen.beam_search(params, config, [1.0, 2.0], beam_width=2, max_new_tokens=2)
    with pytest.raises(TypeError, match="ids"):
        gen.postprocess([1.0], tok)
    assert tok.decode(np.array([0, 1], dtype=np.int32)) == tok.decode([np.int64(0), 1]) == "ab"


def test_stop_tokens(model):
    params, config = model
    none = gen.generate(params, config, [[1, 2]], 5, temperature=0, stop_tokens=None)
    assert none == gen.generate(params, config, [[1, 2]], 5, temperature=0, stop_tokens=())
    assert gen.beam_search(params, config, [1, 2], 2, 3, stop_tokens=None) == gen.beam_search(params, config,
                                                                                               [1, 2], 2, 3)
    with pytest.raises(TypeError, match="stop_tokens: expected a sequence of integer token ids, got int"):
        gen.generate(params, config, [[1, 2]], 5, stop_tokens=3)
    with pytest.raises(TypeError, match=r"stop_tokens\[0\]: expected an integer token id, got str"):
        gen.generate(params, config, [[1, 2]], 5, stop_tokens=["\n"])


def test_length_penalty_must_be_a_finite_number(model):
    params, config = model
    with pytest.raises(ValueError, match="length_penalty: expected a finite number, got nan"):
        gen.beam_search(params, config, [1, 2], 2, 3, length_penalty=float("nan"))
    with pytest.raises(TypeError, match="length_penalty: expected a number, got str"):
        gen.beam_search(params, config, [1, 2], 2, 3, length_penalty="1")
    with pytest.raises(TypeError, match="beam_width: expected a positive int, got bool"):
        gen.beam_search(params, config, [1, 2], True, 3)


def test_on_step_streams_each_token(model):
    params, config = model
    seen = []
    out = gen.generate(params, config, [[1, 2], [3]], 6, temperature=0, stop_tokens=[4], on_step=seen.append)
    for b in range(2):
        assert [s[b] for s in seen if s[b] is not None] == out[b]
    assert all(len(s) == 2 for s in seen)
