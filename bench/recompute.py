"""Activation recomputation: the memory it saves and the time it costs, for one training step's loss and gradients.

For each shape, in one process on one thread (BLAS and the fast ops), the stored-activation step
(``gpt.loss_and_grads``) and the recomputed one (``recompute.loss_and_grads``, ``--recompute``) are

- traced once each with ``tracemalloc`` (the peak of the bytes NumPy allocated during the step, parameters
  excluded), and
- timed in turns, the order alternating between repeats, with the machine's load average before and after;

the forward pass alone (``gpt.forward``) is timed in the same turns, since recomputation adds one forward of the
blocks: the predicted time ratio is about ``1 + t_forward / t_step``. The gradients of the two steps are checked
equal bit for bit on every shape. Run it with ``python -m bench.run recompute``.
"""
import os
import statistics
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# (name, B, T, C, L, H, V): the "small" training config's step, and a deeper, wider model where activations dominate
FULL = dict(shapes=[("small config", 16, 128, 128, 4, 4, 320), ("12 layers, T=256", 8, 256, 128, 12, 4, 320)],
            repeats=7)
QUICK = dict(shapes=[("quick", 4, 32, 32, 2, 2, 64)], repeats=2)


def _peak(fn, *args):
    tracemalloc.start()
    try:
        fn(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def measure(name, B, T, C, L, H, V, repeats):
    """One shape: peaks (bytes), median seconds of the stored and recomputed steps and of the forward pass."""
    from reference import tree
    from reference.models import gpt
    from reference.training import recompute

    config = gpt.GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=H, d_model=C)
    params = gpt.init_params(config, np.random.default_rng(0))
    ids, targets = (np.random.default_rng(s).integers(0, V, (B, T)) for s in (1, 2))
    steps = {"stored": lambda: gpt.loss_and_grads(params, config, ids, targets),
             "recomputed": lambda: recompute.loss_and_grads(params, config, ids, targets),
             "forward": lambda: gpt.forward(params, config, ids)}
    (l0, g0), (l1, g1) = steps["stored"](), steps["recomputed"]()     # also the warm-up
    equal = bool(l0 == l1) and all(np.array_equal(a, b) for a, b in zip(tree.flatten(g0).values(),
                                                                         tree.flatten(g1).values()))
    peaks = {k: _peak(steps[k]) for k in ("stored", "recomputed")}
    load_before = os.getloadavg()[0]
    times = {k: [] for k in steps}
    for r in range(repeats):
        for k in (list(steps) if r % 2 == 0 else list(steps)[::-1]):
            t0 = time.perf_counter()
            steps[k]()
            times[k].append(time.perf_counter() - t0)
    sec = {k: statistics.median(v) for k, v in times.items()}
    return {"name": name, "B": B, "T": T, "C": C, "L": L, "H": H, "V": V, "gradients_bit_identical": equal,
            "peak_bytes": peaks, "peak_ratio": round(peaks["recomputed"] / peaks["stored"], 4),
            "block_inputs_bytes": L * B * T * C * 4,
            "seconds": {k: round(v, 5) for k, v in sec.items()},
            "seconds_all": {k: [round(t, 5) for t in v] for k, v in times.items()},
            "time_ratio": round(sec["recomputed"] / sec["stored"], 4),
            "predicted_time_ratio": round(1 + sec["forward"] / sec["stored"], 4),
            "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}}


def run(quick=False):
    from threadpoolctl import threadpool_limits

    from reference import _threads

    cfg = QUICK if quick else FULL
    rows = []
    with threadpool_limits(1), _threads.using(1):
        for shape in cfg["shapes"]:
            row = measure(*shape, repeats=cfg["repeats"])
            rows.append(row)
            print(f"{row['name']}: peak {row['peak_bytes']['stored'] / 2**20:.1f} -> "
                  f"{row['peak_bytes']['recomputed'] / 2**20:.1f} MiB ({row['peak_ratio']:.2f}x), time "
                  f"{row['seconds']['stored']:.3f} -> {row['seconds']['recomputed']:.3f} s ({row['time_ratio']:.2f}x, "
                  f"predicted {row['predicted_time_ratio']:.2f}x), bit-identical {row['gradients_bit_identical']}, "
                  f"load {row['load_average_1min']}", flush=True)
    result = {"threads": 1, "repeats": cfg["repeats"], "cpus": os.cpu_count(), "shapes": rows}
    _figure(result, ROOT / "figures" / "bench_recompute.png")
    return result


def _figure(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["shapes"]
    x = np.arange(len(rows))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (kind, color) in enumerate((("stored", "tab:blue"), ("recomputed", "tab:orange"))):
        ax1.bar(x + (i - 0.5) * 0.35, [r["peak_bytes"][kind] / 2**20 for r in rows], 0.35, color=color, label=kind)
        ax2.bar(x + (i - 0.5) * 0.35, [r["seconds"][kind] for r in rows], 0.35, color=color, label=kind)
    for ax, unit in ((ax1, "peak memory of one step (MiB, tracemalloc)"), (ax2, "seconds per step (median)")):
        ax.set_xticks(x, [f"{r['name']}\nB={r['B']} T={r['T']} C={r['C']} L={r['L']}" for r in rows])
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3, axis="y")
        ax.legend()
    ax1.set_title("Recomputation: memory of the loss and gradients")
    loads = [r["load_average_1min"]["before"] for r in rows]
    ax2.set_title(f"... and its time, 1 thread (load {min(loads):.1f}-{max(loads):.1f} on {result['cpus']} cores)")
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


if __name__ == "__main__":
    from bench.run import main

    main(["recompute", *__import__("sys").argv[1:]])
