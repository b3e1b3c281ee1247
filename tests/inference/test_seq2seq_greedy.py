"""reference/inference/seq2seq.py: greedy decoding of the encoder-decoder against re-running the whole model."""
import numpy as np
import pytest

from reference import tree
from reference.inference import seq2seq
from reference.models import transformer

BOS, EOS = 1, 2


def _tiny(seed=0, norm="post"):
    """A tiny encoder-decoder with parameters large enough for peaked logits, so that argmax ties cannot occur."""
    config = transformer.TransformerConfig(src_vocab_size=9, tgt_vocab_size=7, d_model=8, n_head=2, n_layer=2,
                                           d_ff=16, norm=norm)
    rng = np.random.default_rng(seed)
    flat = tree.flatten(transformer.init_params(config, rng))
    for name, a in flat.items():
        flat[name] = (1.0 if name.endswith("gamma") else 0.0) + rng.normal(0.0, 0.5, size=a.shape)
    return tree.unflatten(flat), config


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_greedy_is_the_argmax_of_the_whole_model_at_every_step(norm):
    # The reference computation: run transformer.forward on [BOS, tokens so far] and take the argmax of the last
    # position. Greedy must pick the same token at every step, with padded sources (row 1 has 2 pads).
    params, config = _tiny(norm=norm)
    rng = np.random.default_rng(1)
    src = rng.integers(3, config.src_vocab_size, size=(3, 6))
    src_pad = np.ones(src.shape, dtype=bool)
    src_pad[1, -2:] = False
    tokens, cache = seq2seq.greedy(params, config, src, BOS, EOS, 5, src_pad)
    prefix = np.full((3, 1), BOS)
    for t in range(tokens.shape[1]):
        logits, _ = transformer.forward(params, config, src, prefix, src_pad)
        np.testing.assert_array_equal(tokens[:, t], logits[:, -1].argmax(-1))
        prefix = np.concatenate([prefix, tokens[:, t:t + 1]], axis=1)
    # The last step's cache is the decoder's on [BOS, tokens[:-1]]: its cross-attention is the forward's.
    _, full = transformer.forward(params, config, src, prefix[:, :-1], src_pad)
    for a, b in zip(transformer.cross_attention(cache), transformer.cross_attention(full)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)   # the same ops on the same numbers


def test_greedy_stops_when_every_row_has_ended():
    # Make EOS the argmax everywhere: the last LayerNorm outputs its beta alone (gamma = 0), and beta is EOS's own
    # (tied) embedding, every entry 10 m (m = the largest |entry| of E): logits = beta . E_v is 100 m^2 d at EOS
    # and at most 10 m^2 d elsewhere.
    params, config = _tiny()
    E = params["wte_tgt"]
    E[EOS] = 10.0 * np.abs(E).max()
    last = params["decoder"][-1]["ln3"]
    last["gamma"][:] = 0.0
    last["beta"][:] = E[EOS]
    src = np.random.default_rng(2).integers(3, config.src_vocab_size, size=(4, 5))
    tokens, _ = seq2seq.greedy(params, config, src, BOS, EOS, 10)
    np.testing.assert_array_equal(tokens, np.full((4, 1), EOS))        # one step, not ten


def test_greedy_bad_arguments_raise():
    params, config = _tiny()
    src = np.zeros((1, 3), dtype=np.int64)
    with pytest.raises(ValueError, match=r"bos: expected a token id in \[0, 7\)"):
        seq2seq.greedy(params, config, src, 7, EOS, 3)
    with pytest.raises(ValueError, match="eos: expected a token id"):
        seq2seq.greedy(params, config, src, BOS, True, 3)
    with pytest.raises(ValueError, match="max_new_tokens: expected an int >= 1"):
        seq2seq.greedy(params, config, src, BOS, EOS, 0)
