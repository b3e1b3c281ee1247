"""What every chapter imports first: the quick-mode switch and the figure writer.

``make book`` runs the chapters in full mode and writes figures into ``figures/``. The test suite runs them with
``LM_PRIMER_QUICK=1`` (smaller problems, seconds not minutes) and points ``LM_PRIMER_FIG_DIR`` at a temporary folder,
so a test run never rewrites the committed figures.
"""
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # a chapter runs with cwd chapters/; this makes tests/ and bench/ importable
    sys.path.insert(0, str(ROOT))

QUICK = os.environ.get("LM_PRIMER_QUICK", "0") == "1"
FIG_DIR = Path(os.environ.get("LM_PRIMER_FIG_DIR", ROOT / "figures"))


def savefig(fig, name, dpi=110):
    """Write ``fig`` as ``FIG_DIR/name`` (PNG, fixed metadata so reruns give the same bytes) and return the path."""
    FIG_DIR.mkdir(parents=True, exist_ok=True)
    path = FIG_DIR / name
    fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return path


def trained_gpt(prefix, quick_flags, full_flags):
    """The trained GPT that the chapters after chapter 2 study: ``(checkpoint dict, where it came from)``.

    ``make book`` runs chapter 2 first, which trains the "small" configuration into ``runs/small/``, and a full build
    loads that checkpoint. In quick mode, or when it is missing, a model is trained now into a temporary folder with
    ``quick_flags`` or ``full_flags`` (flags of ``python -m reference.train``), so the chapter still runs on its own.
    """
    from reference import train
    from reference.training import checkpoint

    path = ROOT / "runs" / "small" / "checkpoint.npz"
    if not QUICK and path.exists():
        return checkpoint.load(path), "runs/small/checkpoint.npz, trained by chapter 2 (config 'small')"
    run_dir = Path(tempfile.mkdtemp(prefix=prefix))
    flags = quick_flags if QUICK else full_flags
    # the loss figure of a temporary run stays in its folder, not in figures/
    train.main(flags + ["--out", str(run_dir), "--figure", str(run_dir / "loss.png"), "--no-progress"])
    return checkpoint.load(run_dir / "checkpoint.npz"), f"a model trained just now for this chapter ({' '.join(flags)})"
