"""Decode speed with and without the KV cache (reference/inference/decoding.py), NumPy float32, one process.

    python -m bench.run decode            # prompt lengths 64 and 512, 64 new tokens each
    python -m bench.run decode --quick    # a smaller model and prompts, a smoke run

Model: a GPT of the shape of a small training config (d_model=256, 4 layers, 8 heads, a 318-token character
vocabulary), randomly initialised: the time per token depends on the shapes, not on the values of the weights. Its
block_size is 640 so that a 512-token prompt plus the new tokens fits (a trained checkpoint has a shorter one).

Both runs do greedy decoding of the same prompt and produce the same tokens:

- with the cache: one prefill of the prompt, then one ``forward_cached`` call per new token on one token;
- without: every new token recomputes the whole sequence so far (prompt + tokens generated so far).

Reported per prompt length: the prefill time, new tokens per second (prefill excluded) for both, and the speed-up.
The run without the cache calls ``forward_cached`` with an empty cache on the whole sequence, which is the full
forward pass (``gpt.forward``'s computation). Times are medians of ``repeats`` runs after one warm-up.

Writes ``figures/bench_decode.png``.
"""
import statistics
import time
from pathlib import Path

import numpy as np

from reference.inference import decoding as gen
from reference.models import gpt

ROOT = Path(__file__).resolve().parent.parent
FIGURE = ROOT / "figures" / "bench_decode.png"

FULL = dict(d_model=256, n_layer=4, n_head=8, vocab_size=318, block_size=640, prompts=[64, 512], new_tokens=64,
            repeats=3)
QUICK = dict(d_model=64, n_layer=2, n_head=4, vocab_size=318, block_size=160, prompts=[16, 64], new_tokens=8,
             repeats=1)


def _decode(params, config, prompt, n, use_cache):
    """Greedy decoding of ``n`` tokens; returns (tokens, prefill seconds, seconds for the n tokens after it)."""
    ids = np.array([prompt], dtype=np.int64)                                # (1, P)
    t0 = time.perf_counter()
    logits, cache = gen.forward_cached(params, config, ids)
    t1 = time.perf_counter()
    out = []
    for _ in range(n):
        nxt = np.argmax(logits[:, -1], axis=-1)[:, None]                    # (1, 1)
        out.append(int(nxt[0, 0]))
        if use_cache:
            logits, cache = gen.forward_cached(params, config, nxt, cache)
        else:
            ids = np.concatenate([ids, nxt], axis=1)                         # (1, P + t)
            logits, _ = gen.forward_cached(params, config, ids)
    return out, t1 - t0, time.perf_counter() - t1


def _median_runs(params, config, prompt, n, use_cache, repeats):
    """One warm-up, then the median prefill and decode times of ``repeats`` runs, and the tokens."""
    tokens, _, _ = _decode(params, config, prompt, n, use_cache)
    runs = [_decode(params, config, prompt, n, use_cache)[1:] for _ in range(repeats)]
    return tokens, statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def _figure(rows, quick):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    x = np.arange(len(rows))
    w = 0.38
    no = [r["tokens_per_s_no_cache"] for r in rows]
    yes = [r["tokens_per_s_cache"] for r in rows]
    ax.bar(x - w / 2, no, w, label="recompute everything", color="#c44e52")
    ax.bar(x + w / 2, yes, w, label="KV cache", color="#4c72b0")
    for i, r in enumerate(rows):
        ax.text(x[i] + w / 2, yes[i], f"{r['speedup']:.1f}x", ha="center", va="bottom")
    ax.set_xticks(x, [f"prompt {r['prompt_len']}" for r in rows])
    ax.set_yscale("log")
    ax.set_ylim(min(no) / 2, max(yes) * 6)                                  # headroom for the labels and legend
    ax.set_ylabel("new tokens / s (greedy, float32)")
    ax.set_title("Decoding with and without the KV cache, NumPy CPU" + (" (quick sizes)" if quick else ""))
    ax.legend(loc="upper center", ncol=2)
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def run(quick=False):
    cfg = QUICK if quick else FULL
    config = gpt.GPTConfig(vocab_size=cfg["vocab_size"], block_size=cfg["block_size"], n_layer=cfg["n_layer"],
                           n_head=cfg["n_head"], d_model=cfg["d_model"])
    rng = np.random.default_rng(0)
    params = gpt.init_params(config, rng, dtype=np.float32)
    n = cfg["new_tokens"]
    rows = []
    for P in cfg["prompts"]:
        prompt = rng.integers(0, config.vocab_size, size=P).tolist()
        tokens_cache, prefill, t_cache = _median_runs(params, config, prompt, n, True, cfg["repeats"])
        tokens_full, _, t_full = _median_runs(params, config, prompt, n, False, cfg["repeats"])
        rows.append({"prompt_len": P, "new_tokens": n, "prefill_s": round(prefill, 5),
                     "tokens_per_s_cache": round(n / t_cache, 1), "tokens_per_s_no_cache": round(n / t_full, 1),
                     "speedup": round(t_full / t_cache, 2), "same_tokens": tokens_cache == tokens_full})
        print(f"prompt {P}: {rows[-1]}", flush=True)
    _figure(rows, quick)
    return {"model": {k: cfg[k] for k in ("d_model", "n_layer", "n_head", "vocab_size", "block_size")},
            "dtype": "float32", "results": rows, "figure": str(FIGURE.relative_to(ROOT))}
