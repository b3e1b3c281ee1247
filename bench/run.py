"""`make bench`: run every benchmark module and write its JSON to bench/results/.

    python -m bench.run              # all modules
    python -m bench.run ops train    # some of them
    python -m bench.run --quick      # small sizes, for a smoke run

Each module ``bench/<name>.py`` has ``run(quick=False) -> dict`` and writes its own figure ``figures/bench_<name>.png``.
The results record the machine they were measured on, since a ratio means nothing without it.
"""
import argparse
import importlib
import json
import os
import platform
import time
from pathlib import Path

MODULES = ["ops", "kernels", "kernels_modern", "train", "decode", "summarize", "comm", "precision", "recompute"]
RESULTS = Path(__file__).resolve().parent / "results"


def machine():
    """What the numbers were measured on."""
    import numpy as np

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "numpy": np.__version__, "processor": platform.processor()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["torch"] = None
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modules", nargs="*", default=MODULES, help=f"any of {MODULES}")
    ap.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.modules) - set(MODULES))
    if unknown:
        ap.error(f"unknown benchmark module(s) {unknown}; expected some of {MODULES}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in args.modules:
        print(f"== bench {name} ==", flush=True)
        t0 = time.perf_counter()
        result = importlib.import_module(f"bench.{name}").run(quick=args.quick)
        record = {"module": name, "quick": args.quick, "machine": machine(),
                  "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "wall_s": round(time.perf_counter() - t0, 1),
                  "results": result}
        out = RESULTS / f"{name}.json"
        out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {out} ({record['wall_s']} s)", flush=True)


if __name__ == "__main__":
    main()
