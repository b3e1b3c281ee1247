r"""How much memory a training run of the NumPy GPT needs, estimated before any array is made.

Training state with AdamW, per parameter: the weights, their gradients and the two moments, four floats
(:func:`reference.studies.counting.training_memory`). Activations come on top: what ``gpt.forward`` keeps for the
backward pass, and the temporaries of the backward pass. For this implementation, in float units (4 bytes in
float32), per step of batch B, context T, width C, L layers, H heads and vocabulary V:

.. math:: \text{activations} \approx 26\,BTCL + 1\,BHT^2L + 3.2\,BTV

The coefficients are fitted to the peak that ``tracemalloc`` measured during ``gpt.loss_and_grads`` for six shapes
(B 2-16, T 32-512, C 32-256, L 1-4, V 320-8192): every measured peak is within 15 % of the formula. The terms are
the per-layer caches (LayerNorm inputs, Q, K, V, the FFN's 4C hidden layer: about 26 floats per token and
channel), the attention probabilities (one T x T matrix per head), and the logits with their gradient.
"""
import os
from pathlib import Path

from reference.studies import counting

ACTIVATION_FLOATS = {"BTCL": 26.0, "BHTTL": 1.0, "BTV": 3.2}


def estimate(run, vocab_size, bytes_per_float=4):
    """Bytes a training step of ``run`` (a config dict of ``reference.train``) needs, by part.

    Returns
    -------
    dict with ``params``, ``grads``, ``adam_m``, ``adam_v``, ``activations`` and ``total`` (bytes, ints).
    """
    B, T, C = run["batch_size"], run["block_size"], run["d_model"]
    L, H, V = run["n_layer"], run["n_head"], vocab_size
    shape = counting.DecoderShape(n_layer=L, d_model=C, n_head=H, n_ctx=T, vocab_size=V)
    n_params = counting.param_count(shape, learned_positions=run.get("positional", "learned") == "learned")["total"]
    state = counting.training_memory(n_params)        # float32 weights, grads, m and v
    scale = bytes_per_float / 4
    parts = {"params": state["weights"] * scale, "grads": state["grads"] * scale,
             "adam_m": state["adam_m"] * scale, "adam_v": state["adam_v"] * scale}
    floats = (ACTIVATION_FLOATS["BTCL"] * B * T * C * L + ACTIVATION_FLOATS["BHTTL"] * B * H * T * T * L
              + ACTIVATION_FLOATS["BTV"] * B * T * V)
    parts["activations"] = floats * bytes_per_float
    parts = {k: int(v) for k, v in parts.items()}
    parts["total"] = sum(parts.values())
    return parts


def available():
    """``(total, available)`` bytes of memory this process may use: ``/proc/meminfo``'s MemTotal and MemAvailable,
    lowered to a cgroup limit (a container's ``memory.max``) if there is one. ``(None, None)`` where unknown."""
    total = avail = None
    try:
        info = {}
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, value = line.split(":", 1)
            info[key] = int(value.split()[0]) * 1024           # kB
        total, avail = info.get("MemTotal"), info.get("MemAvailable")
    except (OSError, ValueError):
        try:
            total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            limit = int(limit)
            total = limit if total is None else min(total, limit)
            avail = limit if avail is None else min(avail, limit)
    except (OSError, ValueError):
        pass
    return total, avail


def gib(n_bytes):
    """Bytes as GiB for a message: ``'1.5 GiB'``, ``'2.3e+09 GiB'`` when absurd."""
    g = n_bytes / 2**30
    return f"{g:.3g} GiB" if g < 1e6 else f"{g:.2e} GiB"


def describe(parts):
    """One line: the total and its parts."""
    return (f"{gib(parts['total'])} (parameters {gib(parts['params'])}, gradients {gib(parts['grads'])}, AdamW "
            f"moments {gib(parts['adam_m'] + parts['adam_v'])}, activations {gib(parts['activations'])})")
