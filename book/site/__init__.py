"""The book as a website: the executed chapter notebooks, the figures and the API reference, rendered by Sphinx.

    python -m book.site                  # build/site/index.html (what `make site` and the end of `make book` run)
    python -m book.site --out DIR        # somewhere else

Why Sphinx + MyST-NB + sphinx-book-theme: all three install from PyPI and build offline (Jupyter Book 2's ``mystmd``
downloads its theme at build time); MyST-NB renders a notebook's outputs as committed, without running it; and the
same Sphinx run turns the package's numpydoc docstrings into the API reference, so the book's text and the code's
documentation live in one site.

The notebooks are never executed here: a site build takes seconds to a minute, whatever the chapters cost. The
sources are staged into ``build/site_src/`` (a file is rewritten only when its bytes change, so Sphinx's own cache in
``build/site_doctrees/`` re-reads only what changed). Chapters added later (``00_*``, ``12_*``, ...) are picked up
from ``chapters/`` by their file names; their one-line description on the home page comes from the README's chapter
table.
"""
import argparse
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = Path(__file__).resolve().parent
CHAPTER_DIR = ROOT / "chapters"
FIGURE_DIR = ROOT / "figures"
SITE_DIR = ROOT / "build" / "site"
STAGE_DIR = ROOT / "build" / "site_src"
DOCTREE_DIR = ROOT / "build" / "site_doctrees"

# API pages: (page name, title, packages whose modules it documents). Modules are found on disk, so a module added
# to one of these packages appears without editing this list; names starting with "_" are private and left out.
API_PAGES = [
    ("reference", "The package map and shared helpers", ["reference"]),
    ("ops", "Equations: reference.ops", ["reference.ops"]),
    ("models", "Models: reference.models", ["reference.models"]),
    ("tokenizers", "Tokenizers: reference.tokenizers", ["reference.tokenizers"]),
    ("training", "Training: reference.training", ["reference.training"]),
    ("inference", "Inference: reference.inference", ["reference.inference"]),
    ("compression", "Compression: reference.compression", ["reference.compression"]),
    ("studies", "Studies: reference.studies", ["reference.studies"]),
    ("kernels", "Triton kernels: kernels", ["kernels"]),
]
COMMANDS = [("python -m reference.train", "reference.train"), ("python -m reference.summarize", "reference.summarize")]


def chapter_notebooks():
    """The executed chapter notebooks in reading order."""
    return sorted(CHAPTER_DIR.glob("[0-9][0-9]_*.ipynb"))


def chapter_title(nb_path):
    """The chapter's title: the first markdown heading of its source (or notebook)."""
    import nbformat

    for cell in nbformat.read(nb_path, as_version=4).cells:
        match = re.search(r"^# (.+)$", cell.source, flags=re.M) if cell.cell_type == "markdown" else None
        if match:
            return match.group(1).strip()
    return nb_path.stem


def readme_summaries():
    """``{chapter stem: one-line description}`` from the README's chapter table."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\|\s*\[[^\]]+\]\(chapters/(\w+)\.ipynb\)\s*\|[^|]*\|\s*([^|]+?)\s*\|\s*$", readme, flags=re.M)
    return dict(rows)


def write_if_changed(path, data):
    """Write ``data`` (str or bytes) to ``path`` unless it already holds exactly that; keeps Sphinx's cache valid."""
    data = data.encode("utf-8") if isinstance(data, str) else data
    if path.exists() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def public_modules(package):
    """Dotted names of the public modules of ``package`` (found on disk, in name order), the package first."""
    folder = ROOT.joinpath(*package.split("."))
    names = [package]  # sub-packages have their own page; the commands have theirs
    for info in sorted(pkgutil.iter_modules([str(folder)]), key=lambda m: m.name):
        name = f"{package}.{info.name}"
        if info.name.startswith("_") or info.ispkg or name in {module for _, module in COMMANDS}:
            continue
        names.append(f"{package}.{info.name}")
    return names


def _heading(text, char="="):
    return f"{text}\n{char * len(text)}\n"


def api_page(title, packages):
    parts = [_heading(title)]
    for package in packages:
        for i, module in enumerate(public_modules(package)):
            if i:
                parts.append(_heading(f"``{module}``", "-"))
            parts.append(f".. automodule:: {module}\n" + ("   :no-members:\n" if i == 0 else ""))
    return "\n".join(parts)


def command_help(module):
    """What ``python -m module --help`` prints (the options of a command), or why it could not be run."""
    run = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    return run.stdout if run.returncode == 0 else f"(--help failed: {run.stderr.strip().splitlines()[-1:]})"


def commands_page():
    parts = [_heading("Commands"), "Each command's documentation, then the options it prints with ``--help``.\n"]
    for command, module in COMMANDS:
        parts.append(_heading(f"``{command}``", "-"))
        parts.append(f".. automodule:: {module}\n   :no-members:\n")
        parts.append(".. code-block:: text\n\n" + "".join(f"   {line}\n" for line in command_help(module).splitlines()))
    return "\n".join(parts)


def stage(stage_dir=STAGE_DIR):
    """Assemble the Sphinx source folder: home page, notebooks, figures, API pages. Returns the staged files."""
    files = {}
    notebooks = chapter_notebooks()
    summaries = readme_summaries()
    chapter_list = "\n".join(
        f"- [{chapter_title(nb)}](chapters/{nb.stem}.ipynb)" + (f": {summaries[nb.stem]}" if nb.stem in summaries else "")
        for nb in notebooks)
    home = (CONF_DIR / "home.md").read_text(encoding="utf-8")
    home = home.replace("{chapter_list}", chapter_list)
    home = home.replace("{chapter_toctree}", "\n".join(f"chapters/{nb.stem}" for nb in notebooks))
    files["index.md"] = home
    for nb in notebooks:
        files[f"chapters/{nb.name}"] = nb.read_bytes()
    for png in sorted(FIGURE_DIR.glob("*.png")):  # for the chapters' ../figures/ links
        files[f"figures/{png.name}"] = png.read_bytes()
    toc = "\n".join(f"   {name}" for name, _, _ in API_PAGES)
    files["api/index.rst"] = (
        _heading("API reference")
        + "\nThe package ``reference/`` (NumPy) and the Triton kernels ``kernels/``, from their docstrings: each op with "
          "its equation and shapes, each model, each command. The chapters explain; these pages are the contract.\n\n"
        + f".. toctree::\n   :maxdepth: 1\n\n{toc}\n   commands\n")
    for name, title, packages in API_PAGES:
        files[f"api/{name}.rst"] = api_page(title, packages)
    files["api/commands.rst"] = commands_page()

    for rel, data in files.items():
        write_if_changed(stage_dir / rel, data)
    for path in stage_dir.rglob("*"):  # a chapter or figure removed since the last build leaves the site too
        if path.is_file() and path.relative_to(stage_dir).as_posix() not in files:
            path.unlink()
    return sorted(files)


def build(out=SITE_DIR, quiet=True):
    """Stage and render the site into ``out``; returns the path of its home page."""
    out = Path(out)
    stage()
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-c", str(CONF_DIR), "-d", str(DOCTREE_DIR),
           "-j", "1", str(STAGE_DIR), str(out)]
    if quiet:
        cmd.insert(3, "-q")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRITON_INTERPRET": "1", "MPLBACKEND": "Agg"}
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    return out / "index.html"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m book.site", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(SITE_DIR), help="output folder (default: build/site)")
    parser.add_argument("--clean", action="store_true", help="forget Sphinx's cache and render every page again")
    args = parser.parse_args(argv)
    if args.clean:
        shutil.rmtree(DOCTREE_DIR, ignore_errors=True)
        shutil.rmtree(args.out, ignore_errors=True)
    t0 = time.perf_counter()
    index = build(args.out)
    print(f"site: {index} in {time.perf_counter() - t0:.1f} s")
