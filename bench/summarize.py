"""Time and peak memory of the extractive summariser (reference/inference/summarizer.py) at 50 KB, 500 KB and 5 MB.

    python -m bench.run summarize            # 50 KB, 500 KB, 5 MB (about 20 min on one core)
    python -m bench.run summarize --quick    # 5 KB and 20 KB, a smoke run

Text: the King James Bible (the training corpus), its first N bytes cut at a line end; 5 MB is longer than the
Bible (4.3 MB), so it starts over. Each size runs in a fresh process with one BLAS thread, which reports its own
peak resident memory (``ru_maxrss``: everything the process held, the Python interpreter and the 90 MB model
included) and the time of each stage: splitting and the [UNK] rate, embedding, scoring (TextRank; dense up to
``DENSE_MAX`` sentences, the sparse k-nearest-neighbour graph above).

For comparison, the 50 KB text also runs the way the summariser worked before it was made to scale:
``bert.embed_sentences`` (batches of 32 sentences in text order, each padded to its longest) and TextRank on the
dense N x N matrix. The load average of the machine is recorded before and after each run: on a shared machine
the times are only comparable within one run of this benchmark.

Writes ``figures/bench_summarize.png``.
"""
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURE = ROOT / "figures" / "bench_summarize.png"
FULL = [50_000, 500_000, 5_000_000]
QUICK = [5_000, 20_000]


def text_of_size(n_bytes):
    """The KJV repeated as needed, cut at the last line end before ``n_bytes`` (ASCII: bytes = characters)."""
    from reference.training import data

    corpus = data.load_corpus()
    text = corpus * (n_bytes // len(corpus) + 1)
    return text[:text.rindex("\n", 0, n_bytes) + 1]


def child(n_bytes, how):
    """Summarise ``n_bytes`` of text in this process; print one JSON line of timings and peak memory."""
    import numpy as np

    from reference.inference import summarizer as sm
    from reference.models import bert

    text = text_of_size(n_bytes)
    t0 = time.perf_counter()
    params, config = bert.from_pretrained()
    t1 = time.perf_counter()
    sentences = sm.split_sentences(text)
    rate = sm.unk_rate(sentences)
    t2 = time.perf_counter()
    if how == "before":
        E = bert.embed_sentences(sentences, params, config)
    else:
        E = sm.embed(sentences, params, config)
    t3 = time.perf_counter()
    scores = sm.textrank(E @ E.T) if how == "before" else sm.centrality(E, "textrank")
    best = sorted(np.argsort(-scores, kind="stable")[:3])
    t4 = time.perf_counter()
    print(json.dumps({
        "bytes": len(text.encode("utf-8")), "how": how, "sentences": len(sentences), "unk_rate": rate,
        "textrank": "dense" if how == "before" or len(sentences) <= sm.DENSE_MAX else
                    f"sparse, {sm.NEIGHBOURS} neighbours",
        "load_model_s": round(t1 - t0, 2), "split_and_unk_s": round(t2 - t1, 2), "embed_s": round(t3 - t2, 1),
        "score_s": round(t4 - t3, 2), "total_s": round(t4 - t1, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "summary_first_words": [" ".join(sentences[i].split()[:6]) for i in best]}))


def _measure(n_bytes, how):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    load_before = os.getloadavg()
    done = subprocess.run([sys.executable, "-m", "bench.summarize", str(n_bytes), how], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True)
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["load_avg_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    print(row, flush=True)
    return row


def _figure(rows, quick):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for how, marker, color in (("bounded", "o-", "#4c72b0"), ("before", "s", "#c44e52")):
        sel = [r for r in rows if r["how"] == how]
        if not sel:
            continue
        x = [r["bytes"] / 1e3 for r in sel]
        label = "now (token-budget batches, sparse TextRank)" if how == "bounded" else "before (batches of 32, dense)"
        axes[0].plot(x, [r["total_s"] for r in sel], marker, color=color, label=label)
        axes[1].plot(x, [r["peak_rss_mb"] for r in sel], marker, color=color, label=label)
    for ax, ylabel in zip(axes, ("seconds (split, embed, score)", "peak resident memory (MB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("text size (KB)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8, loc="upper left")
    loads = [x for r in rows for x in r["load_avg_before_after"]]
    fig.suptitle(f"Extractive summary with the NumPy MiniLM: time linear in the text, memory bounded\n(one core; "
                 f"load average {min(loads):.0f}-{max(loads):.0f} on the machine's {os.cpu_count()} cores)"
                 + (" (quick sizes)" if quick else ""))
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def run(quick=False):
    from reference.inference import summarizer as sm

    sizes = QUICK if quick else FULL
    rows = [_measure(sizes[0], "before")] + [_measure(n, "bounded") for n in sizes]
    _figure(rows, quick)
    return {"token_budget": sm.TOKEN_BUDGET, "dense_max": sm.DENSE_MAX, "neighbours": sm.NEIGHBOURS,
            "cpus": os.cpu_count(), "results": rows, "figure": str(FIGURE.relative_to(ROOT))}


if __name__ == "__main__":
    child(int(sys.argv[1]), sys.argv[2])
