"""Small trained-model checkpoints for the tests of the commands that read them (generate, export)."""
import numpy as np

from reference import train, tree
from reference.models import gpt
from reference.tokenizers import CharTokenizer
from reference.training import checkpoint

TEXT = "In the beginning God created the heaven and the earth.\nAnd the earth was without form, and void.\n"


def tiny_checkpoint(path, tokenizer=None, positional=None, block_size=32, scale=0.5, seed=0, config="tiny", arch=None):
    """A checkpoint as ``reference.train`` writes it (the keys that a model needs), with random weights of std
    ``scale``: large enough that logits are peaked, so greedy decoding has clear winners (std 0.02 would leave
    top-2 gaps at float32 round-off). ``config``: a named config of ``reference.train`` ("tiny", "llama-tiny",
    ...); ``positional`` and ``arch`` (a dict of architecture settings) override it."""
    tokenizer = tokenizer or CharTokenizer.train(TEXT)
    run = dict(train.DEFAULTS, **train.CONFIGS[config], config=config)
    run.update(block_size=block_size, **({} if positional is None else {"positional": positional}), **(arch or {}))
    run["betas"] = list(run["betas"])
    config = train.model_config(run, tokenizer.vocab_size)
    rng = np.random.default_rng(seed)
    flat = tree.flatten(gpt.init_params(config, rng, dtype=np.float32))
    for name, a in flat.items():
        base = 1.0 if name.endswith("gamma") else 0.0
        flat[name] = (base + rng.normal(0.0, scale, size=a.shape)).astype(np.float32)
    if isinstance(tokenizer, CharTokenizer):
        flat["wte"][len(tokenizer.chars):] = 0       # byte-fallback ids get logit 0: greedy picks characters
    params = tree.unflatten(flat)
    checkpoint.save(path, {"params": params, "step": 7, "run": run, "tokenizer": tokenizer.to_json()})
    return params, config, tokenizer
