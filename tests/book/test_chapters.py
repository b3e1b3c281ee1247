"""The book: every chapter executes in quick mode, its .ipynb is in step with its .py, its figures exist and show."""
import base64
import re
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from book.build import GLUE_RE, chapter_sources, execute, figures_written  # noqa: E402

CHAPTERS = chapter_sources()
IDS = [p.stem for p in CHAPTERS]
FIGURE_RE = re.compile(r"""`([\w\-]+\.png)`|figures/([\w\-]+\.png)""")


def _cells(nb):
    """(type, source, tags) of each cell; a markdown cell with glued numbers counts by its template (the .py's text)."""
    return [(c.cell_type, c.metadata.get("lm_primer_template", c.source).strip(), c.metadata.get("tags", []))
            for c in nb.cells if c.cell_type in ("code", "markdown")]


def _png_outputs(nb):
    """The bytes of every PNG image output of the notebook's code cells, in order."""
    return [base64.b64decode(o["data"]["image/png"]) for c in nb.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if "image/png" in o.get("data", {})]


@pytest.mark.parametrize("source", CHAPTERS, ids=IDS)
def test_notebook_in_step_with_source(source):
    ipynb = source.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} is missing: run `make book`"
    executed = nbformat.read(ipynb, as_version=4)
    assert _cells(executed) == _cells(jupytext.read(source)), f"{ipynb.name} is out of step with {source.name}: run `make book`"
    unexecuted = [i for i, c in enumerate(executed.cells) if c.cell_type == "code" and c.source.strip() and c.execution_count is None]
    assert not unexecuted, f"{ipynb.name}: code cells {unexecuted} were never executed"
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, f"{ipynb.name} was committed with an error output"


@pytest.mark.parametrize("source", CHAPTERS, ids=IDS)
def test_prose_numbers_are_the_computed_ones(source):
    # A number in the text that a cell computes is glued ({{name}} in the .py), and the notebook shows the value
    # that cell produced: no placeholder left, and each glued cell reads as its template with the recorded values.
    executed = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    values = executed.metadata.get("lm_primer", {}).get("glue", {})
    for cell in executed.cells:
        if cell.cell_type != "markdown":
            continue
        assert not GLUE_RE.search(cell.source), f"{source.stem}: unrendered {GLUE_RE.findall(cell.source)}: rebuild it"
        template = cell.metadata.get("lm_primer_template")
        if template is not None:
            assert GLUE_RE.sub(lambda m: values[m.group(1)], template) == cell.source


@pytest.mark.parametrize("source", CHAPTERS, ids=IDS)
def test_notebook_shows_every_figure_it_writes(source):
    # A reader of the notebook (GitHub, Jupyter, the site) sees each figure under the cell that drew it:
    # book.savefig displays the PNG it wrote, so there is at least one image output per figure file.
    executed = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    written, shown = figures_written(source), _png_outputs(executed)
    assert len(shown) >= len(written), (
        f"{source.stem} writes {len(written)} figures {written} but its notebook shows {len(shown)} images: "
        "call book.savefig (which displays the figure) and rebuild the chapter")


@pytest.mark.parametrize("source", CHAPTERS, ids=IDS)
def test_figures_referenced_by_chapter_exist(source):
    # what it writes with savefig, and what its text names: `name.png` or a ../figures/ link
    text = source.read_text(encoding="utf-8")
    names = set(figures_written(source)) | {a or b for a, b in FIGURE_RE.findall(text)}
    missing = sorted(n for n in names if not (ROOT / "figures" / n).exists())
    assert not missing, f"{source.name} references figures that are not in figures/: {missing}"


@pytest.mark.parametrize("source", CHAPTERS, ids=IDS)
def test_chapter_executes_in_quick_mode(source, tmp_path, monkeypatch):
    monkeypatch.setenv("LM_PRIMER_QUICK", "1")
    monkeypatch.setenv("LM_PRIMER_FIG_DIR", str(tmp_path))
    nb = execute(source, timeout=600)  # raises CellExecutionError, naming the cell, on any error
    assert any(c.cell_type == "code" for c in nb.cells)
    # Each figure it wrote is displayed with exactly the file's bytes, and the figure names are the ones the
    # source passes to savefig (which test_notebook_shows_every_figure_it_writes counts).
    written = sorted(p.name for p in tmp_path.glob("*.png"))
    assert written == figures_written(source), f"{source.stem} wrote {written}, its source names {figures_written(source)}"
    shown = _png_outputs(nb)
    hidden = [name for name in written if (tmp_path / name).read_bytes() not in shown]
    assert not hidden, f"{source.stem} writes figures that its notebook does not show: {hidden}"


def test_readme_figures_exist():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = sorted(p for p in re.findall(r"\]\((figures/[\w\-]+\.png)\)", readme) if not (ROOT / p).exists())
    assert not missing, f"README shows figures that do not exist: {missing}"
