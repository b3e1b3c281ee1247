"""reference/studies/attention_heads.py: the weights come from the same forward pass as gpt.forward, and each statistic
means what it says on attention patterns built by hand."""
import numpy as np
import pytest

from reference.models import gpt
from reference.studies import attention_heads


def test_weights_come_from_the_gpt_forward_pass(rng):
    cfg = gpt.GPTConfig(vocab_size=13, block_size=12, n_layer=2, n_head=2, d_model=16)
    params = gpt.init_params(cfg, rng, dtype=np.float64)
    for p in params["blocks"]:                      # weights large enough for attention to be far from uniform
        p["attn"]["Wq"] *= 20
        p["attn"]["Wk"] *= 20
    ids = rng.integers(0, 13, size=(3, 12))
    weights, logits = attention_heads.attention_weights(params, cfg, ids)
    # float64, the same ops; gpt.forward fuses the three projections into one product: round-off only
    np.testing.assert_allclose(logits, gpt.forward(params, cfg, ids)[0], rtol=0, atol=1e-12)
    assert len(weights) == 2 and all(P.shape == (3, 2, 12, 12) for P in weights)
    for P in weights:
        np.testing.assert_allclose(P.sum(-1), 1, rtol=0, atol=1e-12)
        assert np.all(P[..., np.triu_indices(12, 1)[0], np.triu_indices(12, 1)[1]] == 0)    # causal
    assert max(P.max() for P in weights) > 0.5      # not all uniform: the statistics below have something to see
    with pytest.raises(ValueError, match="exceeds the model's block_size=12"):
        attention_heads.attention_weights(params, cfg, rng.integers(0, 13, size=(1, 13)))


def _causal(B, H, T, rows):
    """A (B, H, T, T) pattern whose row i is ``rows(i)`` (a length-T vector)."""
    P = np.zeros((B, H, T, T))
    for i in range(T):
        P[:, :, i] = rows(i)
    return P


def test_statistics_of_a_previous_token_head():
    T = 10

    def prev(i):
        r = np.zeros(T)
        r[max(i - 1, 0)] = 1
        return r

    s = attention_heads.head_statistics(_causal(2, 1, T, prev))
    assert s["previous"][0] == 1 and s["self"][0] == 0 and s["distance"][0] == 1 and s["entropy"][0] == 0
    assert s["first"][0] == pytest.approx(1 / (T - 1))          # only query 1's previous token is the first


def test_statistics_of_a_uniform_head():
    T = 8
    uniform = lambda i: np.r_[np.full(i + 1, 1 / (i + 1)), np.zeros(T - i - 1)]       # noqa: E731
    s = attention_heads.head_statistics(_causal(1, 3, T, uniform))
    # a uniform causal row has the largest entropy a row can have, ln(i + 1), and weight 1/(i + 1) everywhere
    np.testing.assert_allclose(s["entropy"], s["uniform_entropy"], rtol=1e-12)
    np.testing.assert_allclose(s["first"], np.mean([1 / (i + 1) for i in range(1, T)]), rtol=1e-12)
    np.testing.assert_allclose(s["distance"], np.mean([i / 2 for i in range(1, T)]), rtol=1e-12)


def test_content_statistics_on_spaces_and_repeats():
    SP = 0
    ids = np.array([[5, 6, SP, 7, 8, SP, 7, 9]])                    # spaces at 2 and 5; token 7 at 3 and 6
    T = ids.shape[1]

    def last_space(i):
        r = np.zeros(T)
        spaces = [j for j in range(i + 1) if ids[0, j] == SP]
        r[spaces[-1] if spaces else i] = 1
        return r

    s = attention_heads.head_statistics(_causal(1, 1, T, last_space), ids, SP)
    # queries 1..7: no space yet for query 1 (it reads itself); queries 2..7 read their most recent space
    assert s["on_last_space"][0] == pytest.approx(6 / 7) and s["on_spaces"][0] == pytest.approx(6 / 7)
    # query 6 (token 7) reads position 5 (a space), not its earlier copy at 3: same_token is 0
    assert s["same_token"][0] == 0
    visible_spaces = [sum(ids[0, j] == SP for j in range(i + 1)) / (i + 1) for i in range(1, T)]
    assert s["space_fraction"][0] == pytest.approx(np.mean(visible_spaces))


def test_head_statistics_needs_two_positions():
    with pytest.raises(ValueError, match="T >= 2"):
        attention_heads.head_statistics(np.ones((1, 1, 1, 1)))
