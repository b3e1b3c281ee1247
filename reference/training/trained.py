"""A trained model as ``python -m reference.train`` saved it: its checkpoint read back as params, config and tokenizer.

The training command writes one ``checkpoint.npz`` (``reference.training.checkpoint``) holding the parameters, the
optimizer state, the run configuration and the tokenizer (see ``reference.train.save``). The commands that use a
trained model (``reference.generate``, ``reference.export``) and ``--resume`` read it through :func:`load`, which
checks that it is such a checkpoint and that its weights have the shapes its configuration says.
"""
from typing import NamedTuple

import numpy as np

from reference import tokenizers, tree
from reference.models import gpt
from reference.training import checkpoint

KEYS = ("params", "run", "tokenizer", "step")


class Trained(NamedTuple):
    """What :func:`load` returns."""

    params: dict
    config: gpt.GPTConfig
    tokenizer: object          # CharTokenizer or ByteBPE
    run: dict                  # the run configuration the model was trained with
    step: int
    payload: dict              # the whole checkpoint (optimizer state, RNG, history, ...)


# The architecture settings a run may carry (``reference.train``'s Llama and Mixtral configs); a run without them,
# such as every checkpoint written before they existed, is GPT-2 (GPTConfig's defaults).
ARCHITECTURE = ("norm", "ffn", "d_ff", "n_kv_head", "rope_theta", "bias", "tie_embeddings", "embed_scale", "n_expert",
                "top_k", "aux_loss_coef")


def gpt_config(run, vocab_size):
    """The ``GPTConfig`` of a run configuration (a dict of ``reference.train``) and a vocabulary size."""
    return gpt.GPTConfig(vocab_size=vocab_size, block_size=run["block_size"], n_layer=run["n_layer"],
                         n_head=run["n_head"], d_model=run["d_model"], positional=run["positional"],
                         **{k: run[k] for k in ARCHITECTURE if k in run})


def check_weights(payload, config, path):
    """Raise ``CheckpointError`` if the parameters (and the optimizer's moments, if present) do not have the
    shapes that ``config`` implies: a checkpoint whose settings do not match its weights."""
    try:
        gpt.forward(payload["params"], config, np.zeros((1, 1), dtype=np.int64))   # checks every shape and dtype
    except (ValueError, TypeError, KeyError) as err:
        raise checkpoint.CheckpointError(f"checkpoint {path}: its weights do not match its own settings "
                                         f"({config}): {err}") from err
    shapes = {k: v.shape for k, v in tree.flatten(payload["params"]).items()}
    opt = payload.get("opt_state") or {}
    for moment in ("m", "v"):
        if moment in opt:
            got = {k: v.shape for k, v in tree.flatten(opt[moment]).items()}
            if got != shapes:
                wrong = sorted(k for k in shapes.keys() | got.keys() if shapes.get(k) != got.get(k))
                raise checkpoint.CheckpointError(f"checkpoint {path}: the optimizer's '{moment}' does not match "
                                                 f"the parameters at {wrong[:3]}")


def from_payload(payload, path):
    """A :class:`Trained` from a loaded checkpoint payload; ``path`` names it in errors."""
    missing = [k for k in KEYS if k not in payload]
    if missing:
        raise checkpoint.CheckpointError(f"checkpoint {path} is not a training checkpoint of reference.train: "
                                         f"it lacks {missing}")
    try:
        tok = tokenizers.from_json(payload["tokenizer"])
        config = gpt_config(payload["run"], tok.vocab_size)
    except (ValueError, TypeError, KeyError) as err:
        raise checkpoint.CheckpointError(f"checkpoint {path}: cannot rebuild its tokenizer and model "
                                         f"configuration: {err!s}") from err
    check_weights(payload, config, path)
    return Trained(payload["params"], config, tok, payload["run"], int(payload["step"]), payload)


def load(path):
    """Read and check a checkpoint written by ``reference.train``. Raises ``CheckpointError`` (one line, naming
    the file) for anything else, ``FileNotFoundError`` if there is no file."""
    return from_payload(checkpoint.load(path), path)
