"""Export a trained model to the Hugging Face format, and read a Hugging Face model back.

    python -m reference.export runs/small/checkpoint.npz out/small-hf      # also: lm-primer-export

writes a folder that ``transformers.AutoModelForCausalLM.from_pretrained("out/small-hf")`` loads offline:

- ``model.safetensors``: the weights, written with the ``safetensors`` library (float32, the parameter names of the
  architecture in the installed ``transformers``);
- ``config.json``: the architecture (``GPT2LMHeadModel``, ``LlamaForCausalLM`` or ``MixtralForCausalLM``) and its
  shape;
- ``tokenizer.json`` and ``tokenizer_config.json``: the tokenizer the model was trained with, for
  ``tokenizers.Tokenizer.from_file`` and ``transformers.AutoTokenizer`` (``reference/tokenizers/hf.py``);
- ``generation_config.json``: no special tokens (our tokenizers have none), so generation runs to its length.

The GPT of ``reference/models/gpt.py`` with its default config *is* GPT-2's architecture (pre-LN blocks, learned
positions, tanh GELU, tied head), so the export is a renaming (``gpt.to_hf_gpt2``); the tests hold the logits of the exported model equal to
ours, and its greedy ``generate`` equal to ``decoding.generate``. A model with sinusoidal positions has no GPT-2
equivalent and is refused.

The other way, :func:`load_pretrained` reads a Hugging Face GPT-2 folder (``config.json`` and ``model.safetensors``,
or shards listed in ``model.safetensors.index.json``) into ``(params, config)``, so that a model trained anywhere
can be studied with the book's tools.

Each architecture is one entry of :data:`FORMATS`: how to name its config and weights in both directions. Three are
registered: GPT-2 (above), and the Llama block of chapter 12 (``--config llama-tiny`` / ``llama-small`` of
``reference.train``: RMSNorm, RoPE, SwiGLU, grouped-query attention, no biases), written as ``LlamaForCausalLM``, or
``MixtralForCausalLM`` when it has experts (``mixtral-tiny``), with ``gpt.to_hf_llama`` (a renaming plus the
transposes of ``torch.nn.Linear``'s (out, in) weights). A config that mixes the two families (say GPT-2 with RoPE)
has no Hugging Face architecture and is refused, naming the setting.
"""
import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from reference.models import gpt
from reference.tokenizers import hf as hf_tokenizers

WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
PROG = "python -m reference.export"

# GPT-2's activation names in transformers (ACT2FN) and ours
_ACTIVATIONS = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}
_FROM_HF_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}
# what a GPTConfig must say to be written as each family (GPT-2 also needs learned positions, d_ff = 4 d_model and
# n_kv_head = n_head)
GPT2_BLOCK = dict(norm="layernorm", ffn="mlp", bias=True, tie_embeddings=True, n_expert=0, embed_scale=1.0)
LLAMA_BLOCK = dict(norm="rmsnorm", positional="rope", ffn="swiglu", bias=False)


# ---------------------------------------------------------------------------------------------------------------
# GPT-2
# ---------------------------------------------------------------------------------------------------------------

def gpt2_to_hf(params, config):
    """``(state_dict, config.json dict)`` of a ``GPTConfig`` model in GPT-2's layout."""
    if config.positional != "learned":
        raise ValueError(f"export: GPT-2 has learned positions; this model has positional={config.positional!r}, "
                         f"which no GPT-2 config can express")
    gpt2 = dict(GPT2_BLOCK, d_ff=4 * config.d_model, n_kv_head=config.n_head)
    other = {k: getattr(config, k) for k, v in gpt2.items() if getattr(config, k) != v}
    if other:
        raise ValueError(f"export: neither GPT-2 nor Llama expresses this model: it has GPT-2's learned positions but "
                         f"{', '.join(f'{k}={v!r}' for k, v in other.items())}")
    hf_config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": config.vocab_size, "n_positions": config.block_size, "n_embd": config.d_model,
        "n_layer": config.n_layer, "n_head": config.n_head, "n_inner": None,          # None: 4 * n_embd, as ours
        "activation_function": _ACTIVATIONS[config.activation], "layer_norm_epsilon": config.ln_eps,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "initializer_range": 0.02,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True, "use_cache": True, "bos_token_id": None, "eos_token_id": None,
        "pad_token_id": None, "torch_dtype": str(params["wte"].dtype),
    }
    return gpt.to_hf_gpt2(params), hf_config


def gpt2_check_config(hf_config):
    """Refuse GPT-2 options that ``reference.models.gpt`` does not compute (before any weight is read)."""
    options = {"n_inner": (None, 4 * hf_config["n_embd"]), "scale_attn_weights": (True,),
               "scale_attn_by_inverse_layer_idx": (False,)}
    for key, allowed in options.items():
        if hf_config.get(key, allowed[0]) not in allowed:
            raise ValueError(f"load_pretrained: {key}={hf_config[key]!r} is not supported by reference.models.gpt "
                             f"(expected {' or '.join(map(repr, allowed))})")
    act = hf_config.get("activation_function", "gelu_new")
    if act not in _FROM_HF_ACTIVATIONS:
        raise ValueError(f"load_pretrained: activation_function {act!r}: expected one of {sorted(_FROM_HF_ACTIVATIONS)}")


def gpt2_from_hf(state_dict, hf_config):
    """``(params, GPTConfig)`` of a GPT-2 state dict and its ``config.json`` dict."""
    params, config = gpt.from_hf_gpt2(state_dict, hf_config["n_head"])
    act = _FROM_HF_ACTIVATIONS[hf_config.get("activation_function", "gelu_new")]
    config = dataclasses.replace(config, activation=act, ln_eps=float(hf_config.get("layer_norm_epsilon", 1e-5)))
    return params, config


# ---------------------------------------------------------------------------------------------------------------
# Llama and Mixtral
# ---------------------------------------------------------------------------------------------------------------

def llama_to_hf(params, config):
    """``(state_dict, config.json dict)`` of a Llama-block model: ``LlamaForCausalLM``, or ``MixtralForCausalLM``
    with experts."""
    return gpt.to_hf_llama(params, config), gpt.to_hf_llama_config(config, str(params["wte"].dtype))


def llama_from_hf(state_dict, hf_config):
    """``(params, GPTConfig)`` of a Llama or Mixtral state dict and its ``config.json`` dict."""
    if hf_config.get("model_type") == "mixtral":
        return gpt.from_hf_mixtral(state_dict, hf_config)
    return gpt.from_hf_llama(state_dict, hf_config)


class Format(NamedTuple):
    """How one architecture is written in Hugging Face's format, and read back."""

    to_hf: Callable            # (params, config) -> (state_dict, config.json dict)
    check_config: Callable     # (config.json dict) -> None, raises for what cannot be read
    from_hf: Callable          # (state_dict, config.json dict) -> (params, config)


FORMATS = {"gpt2": Format(gpt2_to_hf, gpt2_check_config, gpt2_from_hf),
           "llama": Format(llama_to_hf, gpt.llama_config, llama_from_hf),
           "mixtral": Format(llama_to_hf, gpt.llama_config, llama_from_hf)}


def _architecture(config):
    """The key of :data:`FORMATS` that writes ``config``: the Llama family when its block is Llama's, else GPT-2
    (whose writer refuses, naming the setting, what GPT-2 cannot express)."""
    if not isinstance(config, gpt.GPTConfig):
        raise TypeError(f"export: no Hugging Face format for a {type(config).__name__}; known: {sorted(FORMATS)}")
    if all(getattr(config, k) == v for k, v in LLAMA_BLOCK.items()):
        return "mixtral" if config.n_expert else "llama"
    return "gpt2"


# ---------------------------------------------------------------------------------------------------------------
# Folders
# ---------------------------------------------------------------------------------------------------------------

def save_pretrained(params, config, tokenizer, outdir):
    """Write the Hugging Face folder of a model (and its tokenizer, unless None). Returns the paths written."""
    from safetensors.numpy import save_file

    state_dict, hf_config = FORMATS[_architecture(config)].to_hf(params, config)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written = [outdir / WEIGHTS, outdir / "config.json", outdir / "generation_config.json"]
    save_file({k: np.ascontiguousarray(v) for k, v in state_dict.items()}, str(written[0]),
              metadata={"format": "pt"})             # transformers reads "pt" files as its own layout
    written[1].write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
    written[2].write_text(json.dumps({"bos_token_id": None, "eos_token_id": None, "pad_token_id": None},
                                     indent=2) + "\n", encoding="utf-8")
    if tokenizer is not None:
        (outdir / "tokenizer.json").write_text(hf_tokenizers.to_hf_json(tokenizer), encoding="utf-8")
        (outdir / "tokenizer_config.json").write_text(hf_tokenizers.tokenizer_config(config.block_size),
                                                      encoding="utf-8")
        written += [outdir / "tokenizer.json", outdir / "tokenizer_config.json"]
    return written


def load_pretrained(folder, dtype=None):
    """``(params, config)`` of a Hugging Face folder: ``config.json`` and ``model.safetensors`` (or its shards).

    ``dtype``: convert the weights (e.g. ``np.float64`` for gradient checks); default as stored (float32 or float64;
    16-bit weights need ``dtype``).
    """
    from safetensors.numpy import load_file

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"load_pretrained: {folder} has no config.json; expected a Hugging Face model folder")
    hf_config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    kind = hf_config.get("model_type")
    if kind not in FORMATS:
        raise ValueError(f"load_pretrained: model_type {kind!r} in {folder / 'config.json'}: expected one of "
                         f"{sorted(FORMATS)}")
    FORMATS[kind].check_config(hf_config)
    if (folder / WEIGHTS).is_file():
        files = [folder / WEIGHTS]
    elif (folder / INDEX).is_file():
        index = json.loads((folder / INDEX).read_text(encoding="utf-8"))
        files = [folder / f for f in sorted(set(index["weight_map"].values()))]
    else:
        raise FileNotFoundError(f"load_pretrained: {folder} has neither {WEIGHTS} nor {INDEX}")
    state_dict = {}
    for f in files:
        state_dict.update(load_file(str(f)))
    if dtype is not None:
        state_dict = {k: v.astype(dtype) for k, v in state_dict.items()}
    return FORMATS[kind].from_hf(state_dict, hf_config)


# ---------------------------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------------------------

def main(argv=None):
    """The ``lm-primer-export`` command: a training checkpoint -> a Hugging Face folder."""
    from reference.training import checkpoint, trained

    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path, help="a checkpoint of python -m reference.train")
    ap.add_argument("outdir", type=Path, help="the folder to write (created; files in it are replaced)")
    args = ap.parse_args(argv)
    try:
        if args.outdir.exists() and not args.outdir.is_dir():
            raise ValueError(f"{args.outdir} is a file; expected a folder to write the model in")
        model = trained.load(args.checkpoint)
        written = save_pretrained(model.params, model.config, model.tokenizer, args.outdir)
    except ImportError as err:
        print(f"{PROG}: error: {err}; the export needs the safetensors and tokenizers packages "
              f"(pip install 'lm-primer[models]')", file=sys.stderr)
        raise SystemExit(2) from err
    except (ValueError, TypeError, OSError, checkpoint.CheckpointError) as err:
        message = f"cannot read {args.checkpoint}: {err.strerror}" if isinstance(err, FileNotFoundError) and \
            err.filename == str(args.checkpoint) else str(err)
        print(f"{PROG}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from err
    print(f"wrote {', '.join(p.name for p in written)} to {args.outdir} ({model.config.n_layer} layers, "
          f"d_model {model.config.d_model}, vocab {model.config.vocab_size}, step {model.step})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
