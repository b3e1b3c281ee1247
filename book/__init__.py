"""What every chapter imports first: the quick-mode switch, the figure writer and the BLAS pin.

``make book`` runs the chapters in full mode and writes figures into ``figures/``. The test suite runs them with
``LM_PRIMER_QUICK=1`` (smaller problems, seconds not minutes) and points ``LM_PRIMER_FIG_DIR`` at a temporary folder,
so a test run never rewrites the committed figures.

Importing this module limits NumPy's BLAS (and any OpenMP pool) to one thread for the rest of the chapter: a
multi-threaded BLAS may sum a product in a different order from one run to the next, and the book's numbers and
figures must come out bit-identical on every build of the same machine. A cell that measures speed on more threads
says so, with ``threadpoolctl.threadpool_limits(n)`` as a context manager around the timing alone.
"""
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # a chapter runs with cwd chapters/; this makes tests/ and bench/ importable
    sys.path.insert(0, str(ROOT))

QUICK = os.environ.get("LM_PRIMER_QUICK", "0") == "1"
FIG_DIR = Path(os.environ.get("LM_PRIMER_FIG_DIR", ROOT / "figures"))

BLAS_THREADS = 1
threadpool_limits(limits=BLAS_THREADS)
# tqdm (imported by transformers) warns that Jupyter's progress widgets are not installed; the chapters draw no
# progress bars, and the warning would print this machine's paths into the notebook.
warnings.filterwarnings("ignore", message="IProgress not found")


def glue(name, text):
    """Give the prose a number this cell computed: ``{{name}}`` in the chapter's markdown becomes ``text``.

    ``python -m book.build`` sets ``LM_PRIMER_GLUE_FILE`` for the kernel; each call adds ``name: text`` to that file,
    and after the run the builder writes the text into the markdown cells of the executed notebook (keeping the
    ``{{name}}`` template in the cell's metadata). The notebook then reads as plain prose on GitHub, in Jupyter and on
    the website alike, and the sentence cannot disagree with the computation. Outside the builder this does nothing.
    ``text`` is a string, formatted as the sentence needs it (``f"{loss:.2f}"``).
    """
    if not isinstance(text, str):
        raise TypeError(f"glue({name!r}, ...): expected the text to insert (a str), got {type(text).__name__}")
    path = os.environ.get("LM_PRIMER_GLUE_FILE")
    if path:
        values = json.loads(Path(path).read_text(encoding="utf-8")) if Path(path).exists() else {}
        values[name] = text
        Path(path).write_text(json.dumps(values, indent=1, ensure_ascii=False), encoding="utf-8")


def machine_load():
    """One line for the cells that measure time: this machine's load and cores, printed beside the measurement."""
    return f"measured on the machine that built this book: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def savefig(fig, name, dpi=110):
    """Write ``fig`` as ``FIG_DIR/name`` and show that same PNG in the notebook, under the cell that drew it.

    The file has fixed metadata, so reruns give the same bytes; the notebook's image output holds exactly these
    bytes (GitHub and Jupyter show it whatever matplotlib backend ran the chapter). The figure is then closed, so
    nothing else draws it twice.
    """
    import matplotlib.pyplot as plt

    FIG_DIR.mkdir(parents=True, exist_ok=True)
    path = FIG_DIR / name
    fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    show_png(path)


def show_png(path):
    """Display the PNG file at ``path`` as an image output when running in a notebook kernel; no-op elsewhere."""
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
    except ImportError:
        return
    if get_ipython() is not None:
        display(Image(data=Path(path).read_bytes(), format="png"))


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
