"""All-reduce on gloo: the bytes each rank sends, measured, against the ring's 2(W-1)/W x the array's bytes, and the time.

A ring all-reduce of an array of ``n`` bytes over W ranks is a reduce-scatter (W-1 steps, each rank sends one chunk
of n/W bytes per step) followed by an all-gather (W-1 more): every rank sends 2 (W-1)/W n bytes, whatever W is.
Data parallelism pays this once per step for the gradients (``reference/training/data_parallel.py``).

Measured here: each rank's ``wchar`` in ``/proc/self/io`` (the bytes the process passed to write calls, which is
how gloo's TCP transport sends) before and after the all-reduces, so the volume is counted, not assumed; and the
time of one all-reduce (the slowest rank's, median of the repeats), on W processes of this machine over loopback.
Run it with ``python -m bench.run comm`` (or ``python -m bench.comm``); it launches ``torchrun`` for each W itself.
One measurement alone (chapter 13 does this): ``torchrun --standalone --nproc_per_node=2 -m bench.comm --child
--sizes 1024 1048576 --repeats 3`` prints rank 0's rows as one JSON line.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WORLDS = (2, 4)
FULL = dict(sizes=[2 ** 10, 2 ** 14, 2 ** 18, 2 ** 22, 2 ** 24], repeats=5)     # float32 elements: 4 KB .. 64 MB
QUICK = dict(sizes=[2 ** 10, 2 ** 16], repeats=2)


def _wchar():
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("wchar:"))


def measure(sizes, repeats):
    """On every rank of a launched group: for each size, the bytes this rank sent per all-reduce and the seconds
    of each repeat; rank 0 returns the table (bytes sent: the largest over ranks; seconds: slowest rank, median)."""
    from reference.training import distributed

    rank, world = distributed.init()
    rows = []
    for n in sizes:
        a = np.ones(n, dtype=np.float32)
        distributed.all_reduce(a)                          # warm-up: connections, buffers
        w0 = _wchar()
        seconds = np.empty(repeats)
        for i in range(repeats):
            distributed.barrier()
            t0 = time.perf_counter()
            distributed.all_reduce(a)
            seconds[i] = time.perf_counter() - t0
        sent = np.array([(_wchar() - w0) / repeats])
        # the barrier before each repeat and gloo's message headers add a few hundred bytes per all-reduce: the
        # excess over the formula at small sizes
        sent = distributed.all_gather(sent).max()
        slowest = distributed.all_gather(seconds).max(axis=0)
        formula = 2 * (world - 1) / world * a.nbytes
        rows.append({"elements": n, "bytes": a.nbytes, "sent_per_rank": float(sent), "formula": formula,
                     "sent_over_formula": round(float(sent) / formula, 5),
                     "seconds": float(np.median(slowest)),
                     "bus_gb_per_s": round(formula / float(np.median(slowest)) / 1e9, 3)})
    distributed.destroy()
    return rank, rows


def run(quick=False):
    cfg = QUICK if quick else FULL
    result = {"load_before": [round(x, 2) for x in os.getloadavg()], "repeats": cfg["repeats"], "by_world": {}}
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1")
    for world in WORLDS:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}",
               "--module", "bench.comm", "--child", *(["--quick"] if quick else [])]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        rows = json.loads(proc.stdout.strip().splitlines()[-1])
        result["by_world"][str(world)] = rows
        for r in rows:
            print(f"W={world} {r['bytes']:>10,} B: sent {r['sent_per_rank']:>12,.0f} B/rank "
                  f"({r['sent_over_formula']:.4f} x 2(W-1)/W n), {r['seconds'] * 1e3:8.2f} ms", flush=True)
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    _figure(result)
    return result


def _figure(result):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (world, rows) in enumerate(result["by_world"].items()):
        n = np.array([r["bytes"] for r in rows])
        ax1.loglog(n, [r["sent_per_rank"] for r in rows], "o", color=f"C{i}", label=f"measured, W={world}")
        ax1.loglog(n, [r["formula"] for r in rows], "-", color=f"C{i}", alpha=0.5, label=f"2(W-1)/W n, W={world}")
        ax2.loglog(n, [r["seconds"] * 1e3 for r in rows], "o-", color=f"C{i}", label=f"W={world}")
    ax1.set(xlabel="array size n (bytes)", ylabel="bytes sent per rank per all-reduce",
            title="All-reduce volume on gloo: measured vs ring formula")
    ax2.set(xlabel="array size n (bytes)", ylabel="time per all-reduce (ms)",
            title=f"All-reduce time, W processes on {os.cpu_count()} cores (loopback)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    path = ROOT / "figures" / "bench_comm.png"
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def _child(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", type=int, nargs="+", help="float32 elements per all-reduce (default: FULL or QUICK)")
    ap.add_argument("--repeats", type=int)
    args = ap.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    cfg.update({k: v for k, v in (("sizes", args.sizes), ("repeats", args.repeats)) if v is not None})
    rank, rows = measure(**cfg)
    if rank == 0:
        print(json.dumps(rows), flush=True)


if __name__ == "__main__":
    if "--child" in sys.argv:
        _child(sys.argv[1:])
    else:
        from bench.run import main

        main(["comm", *sys.argv[1:]])
