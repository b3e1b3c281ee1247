"""Execute every chapter and write the executed notebook beside its source, plus static HTML under build/.

    python -m book.build            # all chapters, full mode (what `make book` runs)
    python -m book.build 06         # only chapters whose file name starts with 06
    LM_PRIMER_QUICK=1 python -m book.build   # quick mode

A chapter is a jupytext percent-format ``chapters/NN_name.py``; the executed ``chapters/NN_name.ipynb`` is generated
from it with its outputs, so the two are always in step (``tests/book/test_chapters.py`` checks that).
"""
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
CHAPTER_DIR = ROOT / "chapters"
HTML_DIR = ROOT / "build" / "html"
TIMEOUT_S = 3600  # per cell; full-mode training cells take minutes on 2 cores


def chapter_sources():
    """The chapter sources in reading order (file names start with their two-digit number)."""
    return sorted(p for p in CHAPTER_DIR.glob("[0-9][0-9]_*.py"))


def execute(source, timeout=TIMEOUT_S):
    """Read a percent-format chapter and return it executed (cwd = chapters/) as a notebook."""
    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(CHAPTER_DIR)}}).execute()
    return nb


def write_html(nb, name):
    from nbconvert import HTMLExporter

    HTML_DIR.mkdir(parents=True, exist_ok=True)
    body, _ = HTMLExporter().from_notebook_node(nb)
    (HTML_DIR / f"{name}.html").write_text(body, encoding="utf-8")


def main(argv=None):
    prefixes = (argv if argv is not None else sys.argv[1:]) or [""]
    sources = [p for p in chapter_sources() if any(p.name.startswith(s) for s in prefixes)]
    if not sources:
        raise SystemExit(f"no chapter matches {prefixes}; chapters are {[p.name for p in chapter_sources()]}")
    start = time.perf_counter()
    for i, src in enumerate(sources, 1):
        t0 = time.perf_counter()
        print(f"[{i}/{len(sources)}] {src.name} ...", flush=True)
        nb = execute(src)
        nbformat.write(nb, src.with_suffix(".ipynb"))
        write_html(nb, src.stem)
        print(f"[{i}/{len(sources)}] {src.name} done in {time.perf_counter() - t0:.1f} s", flush=True)
    print(f"book: {len(sources)} chapter(s) in {time.perf_counter() - start:.1f} s; HTML in {HTML_DIR}")


if __name__ == "__main__":
    main()
