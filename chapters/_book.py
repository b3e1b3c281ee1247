"""What every chapter imports first: the quick-mode switch and the figure writer.

``make book`` runs the chapters in full mode and writes figures into ``figures/``. The test suite runs them with
``LM_PRIMER_QUICK=1`` (smaller problems, seconds not minutes) and points ``LM_PRIMER_FIG_DIR`` at a temporary folder,
so a test run never rewrites the committed figures.
"""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the benchmarks and chapters are importable when run from chapters/
    sys.path.insert(0, str(ROOT))

QUICK = os.environ.get("LM_PRIMER_QUICK", "0") == "1"
FIG_DIR = Path(os.environ.get("LM_PRIMER_FIG_DIR", ROOT / "figures"))


def savefig(fig, name, dpi=110):
    """Write ``fig`` as ``FIG_DIR/name`` (PNG, fixed metadata so reruns give the same bytes) and return the path."""
    FIG_DIR.mkdir(parents=True, exist_ok=True)
    path = FIG_DIR / name
    fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return path
