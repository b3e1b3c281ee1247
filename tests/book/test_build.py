"""The book builder: which files decide a chapter, and how computed numbers reach the prose."""
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from book import build  # noqa: E402

CH = build.CHAPTER_DIR


def test_a_chapter_depends_on_what_it_imports_transitively():
    files = {f.relative_to(ROOT).as_posix() for f in build.input_files(CH / "06_transformer.py")}
    # imported by the chapter itself, by book/__init__.py, and by the modules those import (ops -> _checks)
    assert {"chapters/06_transformer.py", "book/__init__.py", "reference/ops/attention.py",
            "reference/_checks.py"} <= files
    assert not any(f.startswith("chapters/02_") for f in files)


def test_a_chapter_that_studies_the_trained_model_depends_on_chapter_2():
    studies = [p for p in build.chapter_sources() if "trained_gpt(" in p.read_text(encoding="utf-8")]
    assert studies, "no chapter loads chapter 2's model any more: drop TRAINED_GPT_CHAPTER"
    for source in studies:
        assert CH / build.TRAINED_GPT_CHAPTER in build.input_files(source)


def test_the_hash_separates_quick_and_full_mode():
    source = CH / "01_background.py"
    assert build.inputs_hash(source, quick=True) != build.inputs_hash(source, quick=False)
    assert build.inputs_hash(source, quick=False) == build.inputs_hash(source, quick=False)


def _nb(*markdown):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(m) for m in markdown] + [nbformat.v4.new_code_cell("x = 1")]
    return nb


def test_glue_writes_the_values_into_the_prose_and_keeps_the_template():
    nb = build.render_glue(_nb("loss {{loss}} after {{ steps }} steps", "no numbers here"), {"loss": "1.72", "steps": "800"})
    assert nb.cells[0].source == "loss 1.72 after 800 steps"
    assert nb.cells[0].metadata["lm_primer_template"] == "loss {{loss}} after {{ steps }} steps"
    assert "lm_primer_template" not in nb.cells[1].metadata
    assert nb.metadata["lm_primer"]["glue"] == {"loss": "1.72", "steps": "800"}
    # rendering again with new values starts from the template, not from the old text
    assert build.render_glue(nb, {"loss": "1.70", "steps": "900"}).cells[0].source == "loss 1.70 after 900 steps"


def test_glue_refuses_a_name_no_cell_computed():
    with pytest.raises(ValueError, match="loss"):
        build.render_glue(_nb("loss {{loss}}"), {})


def test_latex_braces_are_not_glue():
    text = r"$x^{2}$ and $\frac{a}{b}$ and f-string-like {{{b:.3f}}}"
    assert build.render_glue(_nb(text), {}).cells[0].source == text
