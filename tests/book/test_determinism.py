"""Same inputs, same book: a chapter that trains a model, executed twice, gives the same bytes.

Chapter 2 runs `reference.train` (quick mode: the "tiny" config) and prints the SHA-256 of the trained parameters,
its losses and samples, and writes its figures. Two executions in two fresh kernels must agree on all of it, byte for
byte, except the cells tagged "measurement" (measurements of the machine) and the temporary folder names.
"""
import base64
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from book.build import CHAPTER_DIR, execute, figures_written  # noqa: E402

CHAPTER = CHAPTER_DIR / "02_training.py"
TMP_PATH = re.compile(re.escape(tempfile.gettempdir()) + r"/[^\s,'\"]+")


def _outputs(nb):
    """Per untagged code cell: its text (temporary paths masked) and its images, in order."""
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code" or "measurement" in cell.metadata.get("tags", []):
            continue
        out = []
        for o in cell.get("outputs", []):
            if o.output_type == "stream":
                out.append(TMP_PATH.sub("<tmp>", o.text))
            elif "data" in o:
                out += [base64.b64decode(v) if k.startswith("image/") else TMP_PATH.sub("<tmp>", str(v))
                        for k, v in sorted(o.data.items())]
        cells.append(out)
    return cells


def test_training_chapter_is_bit_identical_twice(tmp_path, monkeypatch):
    monkeypatch.setenv("LM_PRIMER_QUICK", "1")
    runs = []
    for i in range(2):
        fig_dir = tmp_path / f"run{i}"
        monkeypatch.setenv("LM_PRIMER_FIG_DIR", str(fig_dir))
        nb = execute(CHAPTER, timeout=600)
        runs.append((_outputs(nb), {n: (fig_dir / n).read_bytes() for n in figures_written(CHAPTER)}))
    (out_a, figs_a), (out_b, figs_b) = runs
    assert any("SHA-256 of the trained parameters" in str(o) for c in out_a for o in c)
    differ = [i for i, (a, b) in enumerate(zip(out_a, out_b)) if a != b]
    assert not differ, f"code cells {differ} printed different outputs on the second run:\n{out_a[differ[0]]}\n{out_b[differ[0]]}"
    assert figs_a.keys() == figs_b.keys()
    assert not [n for n in figs_a if figs_a[n] != figs_b[n]], "figures with different bytes on the second run"
