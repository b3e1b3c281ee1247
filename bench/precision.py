"""Mixed precision on one run: the tiny config trained in fp32, fp16 (dynamic loss scaling) and bf16 (emulated).

The same seed, data and schedule for the three; only ``--precision`` differs (``reference/training/precision.py``
says what is rounded where). Recorded: the training-loss curves, the gradient norms, the validation losses, the loss
scaler's events, and the seconds per step (NumPy's float16 has no BLAS matmul, so fp16 is slow here; that is NumPy,
not fp16).
"""
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FULL = dict(steps=400, eval_interval=100)
QUICK = dict(steps=20, eval_interval=10)
PRECISIONS = ("fp32", "fp16", "bf16")


def run(quick=False):
    from reference import train

    cfg = QUICK if quick else FULL
    result = {"config": "tiny", **cfg, "load_before": [round(x, 2) for x in os.getloadavg()], "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in PRECISIONS:
            out = Path(tmp) / name
            t0 = time.perf_counter()
            train.main(["--config", "tiny", "--steps", str(cfg["steps"]), "--eval-interval", str(cfg["eval_interval"]),
                        "--precision", name, "--no-progress", "--out", str(out), "--figure", str(out / "loss.png")])
            log = json.loads((out / "log.json").read_text(encoding="utf-8"))
            result["runs"][name] = {"train_loss": [row[1] for row in log["train"]], "val": log["val"],
                                    "grad_norm": [row[3] for row in log["train"]],
                                    "loss_scale_events": log.get("loss_scale", []),
                                    "seconds_per_step": round(log["train_seconds"] / cfg["steps"], 4),
                                    "wall_s": round(time.perf_counter() - t0, 1)}
    ref = np.array(result["runs"]["fp32"]["train_loss"])
    for name in PRECISIONS[1:]:
        loss = np.array(result["runs"][name]["train_loss"])
        result["runs"][name]["max_abs_diff_vs_fp32"] = round(float(np.abs(loss - ref).max()), 5)
        result["runs"][name]["final_val_minus_fp32"] = round(result["runs"][name]["val"][-1][1]
                                                             - result["runs"]["fp32"]["val"][-1][1], 5)
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    _figure(result)
    return result


def _figure(result):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ref = np.array(result["runs"]["fp32"]["train_loss"])
    steps = np.arange(1, ref.size + 1)
    for name, r in result["runs"].items():
        ax1.plot(steps, r["train_loss"], lw=0.8, label=name)
        if name != "fp32":
            ax2.plot(steps, np.array(r["train_loss"]) - ref, lw=0.8, label=f"{name} - fp32")
    ax1.set(xlabel="step", ylabel="training loss (nats per char)", title="tiny config: same run in three precisions")
    ax2.set(xlabel="step", ylabel="loss difference (nats)", title="difference from the fp32 run")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    path = ROOT / "figures" / "bench_precision.png"
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


if __name__ == "__main__":
    from bench.run import main

    main(["precision", *__import__("sys").argv[1:]])
