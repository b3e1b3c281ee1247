"""reference/export.py: the exported folder is the same model for transformers (logits, greedy tokens, tokenizer),
and a Hugging Face GPT-2 folder reads back into params and config."""
import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel
from transformers.utils import logging as hf_logging

from reference import export, tree
from reference.inference import decoding
from reference.models import gpt
from reference.tokenizers import ByteBPE
from reference.training import data
from tests.gpt_checkpoints import TEXT, tiny_checkpoint

hf_logging.disable_progress_bar()


@pytest.fixture(scope="module", params=["char", "bpe"])
def exported(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    tok = None if request.param == "char" else ByteBPE.train(TEXT * 3, 300, progress=False)
    params, config, tok = tiny_checkpoint(folder / "checkpoint.npz", tokenizer=tok)
    assert export.main([str(folder / "checkpoint.npz"), str(folder / "hf")]) == 0
    model = AutoModelForCausalLM.from_pretrained(folder / "hf").eval()
    return params, config, tok, folder / "hf", model


def test_the_folder_holds_what_transformers_reads(exported):
    *_, folder, model = exported
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "generation_config.json", "model.safetensors",
                                                         "tokenizer.json", "tokenizer_config.json"]
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()       # the head is tied


def test_exported_logits_equal_ours(exported):
    params, config, tok, _, model = exported
    ids = np.random.default_rng(0).integers(0, config.vocab_size, size=(3, config.block_size))
    ours, _ = gpt.forward(params, config, ids)
    with torch.no_grad():
        theirs = model(torch.from_numpy(ids)).logits.numpy()
    # float32 on both sides, different summation orders: relative round-off ~1e-6 on logits of size ~30 after two
    # blocks; a wrong piece (exact vs tanh GELU, LayerNorm eps, an untied head, a transposed matrix) moves them by
    # 1e-2 or more
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=2e-4 * np.abs(ours).max())


def test_greedy_generate_of_transformers_gives_our_tokens(exported):
    params, config, tok, _, model = exported
    prompt = tok.encode("And the")
    n = config.block_size - len(prompt)
    ours = decoding.generate(params, config, [prompt], n, temperature=0)[0]
    # the comparison means something only if no step is a near-tie that float32 round-off could flip
    seq = np.array([prompt + ours[:-1]])
    logits, _ = gpt.forward(params, config, seq)
    top2 = np.sort(logits[0, len(prompt) - 1:], axis=-1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0]).min() > 1e-3
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, pad_token_id=0)
    assert out[0, len(prompt):].tolist() == ours


def test_the_tokenizer_round_trips(exported):
    _, _, tok, folder, _ = exported
    text = data.train_val_split(data.load_corpus())[1][:20_000] + "\nnaïve 你好 🙂"
    hf_tok = AutoTokenizer.from_pretrained(folder)
    ids = hf_tok(text)["input_ids"]
    assert ids == tok.encode(text)
    assert hf_tok.decode(ids) == text == tok.decode(ids)


@pytest.mark.parametrize("activation, eps", [("gelu_new", 1e-5), ("relu", 1e-6), ("gelu", 1e-5)])
def test_a_hugging_face_gpt2_folder_reads_back(tmp_path, activation, eps):
    torch.manual_seed(0)
    hf_config = GPT2Config(vocab_size=50, n_positions=16, n_embd=24, n_layer=2, n_head=3,
                           activation_function=activation, layer_norm_epsilon=eps)
    model = GPT2LMHeadModel(hf_config).eval()
    with torch.no_grad():                                      # beyond the 0.02 init, so that mistakes show
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    model.save_pretrained(tmp_path)
    params, config = export.load_pretrained(tmp_path)
    assert (config.n_layer, config.n_head, config.d_model, config.block_size) == (2, 3, 24, 16)
    ids = np.random.default_rng(1).integers(0, 50, size=(2, 16))
    ours, _ = gpt.forward(params, config, ids)
    with torch.no_grad():
        theirs = model(torch.from_numpy(ids)).logits.numpy()
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-4 * np.abs(theirs).max())   # as above
    again = tmp_path / "again"
    export.save_pretrained(params, config, None, again)        # and back: the same weights
    p2, c2 = export.load_pretrained(again)
    assert c2 == config
    for a, b in zip(gpt.to_hf_gpt2(params).values(), gpt.to_hf_gpt2(p2).values()):
        np.testing.assert_array_equal(a, b)


def test_unsupported_models_and_folders_are_refused(tmp_path, capsys):
    params, config, tok = tiny_checkpoint(tmp_path / "sin.npz", positional="sinusoidal")
    with pytest.raises(SystemExit) as exc:
        export.main([str(tmp_path / "sin.npz"), str(tmp_path / "out")])
    assert exc.value.code == 2 and "positional='sinusoidal'" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    tiny_checkpoint(tmp_path / "ok.npz")
    for argv, message in (([str(tmp_path / "missing.npz"), str(tmp_path / "out")], "cannot read"),
                          ([str(tmp_path / "ok.npz"), str(tmp_path / "file")], "is a file")):
        with pytest.raises(SystemExit):
            export.main(argv)
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    with pytest.raises(FileNotFoundError, match="no config.json"):
        export.load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type 'bert'"):
        export.load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 8, "n_inner": 16}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="n_inner=16 is not supported"):
        export.load_pretrained(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# The Llama block (and with experts, Mixtral): exported as LlamaForCausalLM / MixtralForCausalLM

@pytest.fixture(scope="module", params=["llama-tiny", "mixtral-tiny"])
def exported_llama(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export_llama")
    params, config, tok = tiny_checkpoint(folder / "checkpoint.npz", config=request.param, scale=0.3)
    assert export.main([str(folder / "checkpoint.npz"), str(folder / "hf")]) == 0
    return params, config, tok, folder / "hf", AutoModelForCausalLM.from_pretrained(folder / "hf").eval()


def test_llama_block_exports_as_llama_or_mixtral(exported_llama):
    params, config, tok, folder, model = exported_llama
    assert type(model).__name__ == ("MixtralForCausalLM" if config.n_expert else "LlamaForCausalLM")
    assert model.config.num_key_value_heads == 2 and not model.config.tie_word_embeddings
    ids = np.random.default_rng(0).integers(0, config.vocab_size, size=(3, config.block_size))
    ours, _ = gpt.forward(params, config, ids)
    with torch.no_grad():
        theirs = model(torch.from_numpy(ids)).logits.numpy()
    # float32 both sides; Hugging Face's RoPE angles are float32 (exact to ~2e-6 rad at positions < 32), and its
    # RMSNorm and router run in float32 as ours do: measured ~1e-6 of the largest logit; a wrong piece moves 1e-2
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=2e-4 * np.abs(ours).max())
    back, config_back = export.load_pretrained(folder)                       # and read back: the same weights
    assert config_back == config
    for k, a in tree.flatten(params).items():
        np.testing.assert_array_equal(tree.flatten(back)[k], a)


def test_greedy_generate_of_transformers_gives_our_tokens_llama(exported_llama):
    params, config, tok, _, model = exported_llama
    prompt = tok.encode("And the")
    n = config.block_size - len(prompt)
    ours = decoding.generate(params, config, [prompt], n, temperature=0)[0]
    seq = np.array([prompt + ours[:-1]])
    logits, _ = gpt.forward(params, config, seq)
    top2 = np.sort(logits[0, len(prompt) - 1:], axis=-1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0]).min() > 1e-3          # no near-tie that float32 round-off could flip
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, pad_token_id=0)
    assert out[0, len(prompt):].tolist() == ours


def test_configs_of_neither_family_are_refused(tmp_path, capsys):
    tiny_checkpoint(tmp_path / "mixed.npz", config="tiny", arch=dict(positional="rope"))
    with pytest.raises(SystemExit):
        export.main([str(tmp_path / "mixed.npz"), str(tmp_path / "out")])
    assert "positional='rope'" in capsys.readouterr().err
    tiny_checkpoint(tmp_path / "mixed2.npz", config="tiny", arch=dict(norm="rmsnorm"))
    with pytest.raises(SystemExit):
        export.main([str(tmp_path / "mixed2.npz"), str(tmp_path / "out")])
    assert "neither GPT-2 nor Llama expresses this model" in capsys.readouterr().err
