"""Execute the chapters whose inputs changed and write each executed notebook beside its source.

    python -m book.build            # every chapter whose inputs changed since its notebook was built (`make book`)
    python -m book.build --force    # every chapter (`make book FORCE=1`)
    python -m book.build 06 09      # only chapters whose file name starts with 06 or 09 (always executed)
    LM_PRIMER_QUICK=1 python -m book.build 06   # quick mode, for trying a change
    python -m book.build --sync 06  # text-only edit: copy the sources into the notebook, keep the outputs

A chapter is a jupytext percent-format ``chapters/NN_name.py``; the executed ``chapters/NN_name.ipynb`` is generated
from it with its outputs, so the two are always in step (``tests/book/test_chapters.py`` checks that). Numbers in
the prose come from the cells: ``book.glue("name", text)`` in code, ``{{name}}`` in markdown, written into the
notebook's markdown after the run (``render_glue``), so GitHub, Jupyter and the site all show the computed text.

What "changed" means: each notebook records, in its metadata, a SHA-256 over its chapter's inputs: the chapter's
``.py``, every module of this repository that it imports (found by reading the ``import`` statements, transitively:
``reference/``, ``book/``, ``kernels/``, ...), the mode (full or quick), and for the chapters that study chapter 2's
trained model (``book.trained_gpt``), chapter 2's inputs too. A chapter is executed again when that hash differs
from the one in its notebook, or when a figure it writes is missing; otherwise it is skipped. The run ends with the
time each chapter took (also written to ``build/book_times.json``).
"""
import argparse
import ast
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
CHAPTER_DIR = ROOT / "chapters"
FIGURE_DIR = ROOT / "figures"
TIMES_FILE = ROOT / "build" / "book_times.json"
TIMEOUT_S = 3600  # per cell; full-mode training cells take minutes on 2 cores
LOCAL_PACKAGES = ("reference", "book", "kernels", "bench", "tests")
TRAINED_GPT_CHAPTER = "02_training.py"  # writes runs/small/checkpoint.npz, which book.trained_gpt loads
GLUE_RE = re.compile(r"\{\{\s*([A-Za-z_]\w*)\s*\}\}")   # {{name}} in markdown: a value from book.glue
SAVEFIG_RE = re.compile(r"""savefig\(\s*\w+\s*,\s*["']([\w\-]+\.png)["']""")


def chapter_sources():
    """The chapter sources in reading order (file names start with their two-digit number)."""
    return sorted(p for p in CHAPTER_DIR.glob("[0-9][0-9]_*.py"))


def figures_written(source):
    """The file names that a chapter passes to ``book.savefig``."""
    return sorted(set(SAVEFIG_RE.findall(Path(source).read_text(encoding="utf-8"))))


def _module_files(dotted):
    """The files of a local module and of the packages above it (``a/__init__.py``, ``a/b.py`` ...), those that exist."""
    parts = dotted.split(".")
    if parts[0] not in LOCAL_PACKAGES:
        return []
    files = []
    for i in range(1, len(parts) + 1):
        base = ROOT.joinpath(*parts[:i])
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.exists():
                files.append(candidate)
    return files


def _imports(path):
    """Dotted names that ``path`` imports (absolute, and relative ones resolved), submodules of ``from`` included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names.append(base)
            names += [f"{base}.{alias.name}" for alias in node.names]  # kept only where such a module exists
    return names


def local_dependencies(source):
    """Every file of this repository that ``source`` imports, directly or through the modules it imports."""
    seen, todo = set(), [Path(source)]
    while todo:
        for name in _imports(todo.pop()):
            for file in _module_files(name):
                if file not in seen:
                    seen.add(file)
                    todo.append(file)
    return sorted(seen)


def input_files(source):
    """The files whose bytes decide a chapter's outputs: its source, what it imports, and chapter 2 where needed."""
    source = Path(source)
    files = [source, *local_dependencies(source)]
    if "trained_gpt(" in source.read_text(encoding="utf-8") and source.name != TRAINED_GPT_CHAPTER:
        trainer = CHAPTER_DIR / TRAINED_GPT_CHAPTER
        files += [trainer, *local_dependencies(trainer)]
    return sorted(set(files))


def inputs_hash(source, quick=None):
    """SHA-256 over a chapter's inputs (see the module docstring), as hex."""
    quick = (os.environ.get("LM_PRIMER_QUICK", "0") == "1") if quick is None else quick
    digest = hashlib.sha256(f"mode={'quick' if quick else 'full'}\n".encode())
    for file in input_files(source):
        digest.update(file.relative_to(ROOT).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def recorded_hash(source):
    """The inputs hash stored in the chapter's executed notebook, or None."""
    ipynb = Path(source).with_suffix(".ipynb")
    if not ipynb.exists():
        return None
    return nbformat.read(ipynb, as_version=4).metadata.get("lm_primer", {}).get("inputs_sha256")


def is_stale(source):
    """Why the chapter must be executed again ("" when its notebook is up to date)."""
    if recorded_hash(source) != inputs_hash(source):
        return "its inputs changed" if recorded_hash(source) else "it has no record of its inputs"
    missing = [n for n in figures_written(source) if not (FIGURE_DIR / n).exists()]
    return f"figures missing: {', '.join(missing)}" if missing else ""


def render_glue(nb, values):
    """Write the glued values into the notebook's markdown: ``{{name}}`` becomes ``values[name]``.

    The cell keeps its template in ``metadata["lm_primer_template"]``, the notebook the values in
    ``metadata["lm_primer"]["glue"]``, so that the test can check text against template. A name that no cell glued
    is an error: the prose would otherwise show a number nothing computed.
    """
    missing = set()
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        template = cell.metadata.get("lm_primer_template", cell.source)
        if not GLUE_RE.search(template):
            continue
        missing |= {m for m in GLUE_RE.findall(template) if m not in values}
        cell.metadata["lm_primer_template"] = template
        cell.source = GLUE_RE.sub(lambda m: values.get(m.group(1), m.group(0)), template)
    if missing:
        raise ValueError(f"the text uses {sorted(missing)}, which no cell passed to book.glue")
    nb.metadata.setdefault("lm_primer", {})["glue"] = dict(sorted(values.items()))
    return nb


SLOW_CELL_S = 15  # cells slower than this are listed after their chapter: where the build time goes


def merge_streams(nb):
    """Join each cell's consecutive stdout (stderr) chunks into one output: how the kernel happened to flush them
    would otherwise change the notebook's bytes from one build to the next, with the same text."""
    for cell in nb.cells:
        merged = []
        for out in cell.get("outputs", []):
            if out.output_type == "stream" and merged and merged[-1].output_type == "stream" \
                    and merged[-1].name == out.name:
                merged[-1].text += out.text
            else:
                merged.append(out)
        if "outputs" in cell:
            cell.outputs = merged
    return nb


def stable_ids(nb):
    """Give every cell an id made from its position and source (nbformat would draw random ones on each build)."""
    for i, cell in enumerate(nb.cells):
        text = cell.metadata.get("lm_primer_template", cell.source)
        cell.id = f"c{i:03d}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
    return nb


def execute(source, timeout=TIMEOUT_S, cell_times=None):
    """Read a percent-format chapter and return it executed (cwd = chapters/) as a notebook, its glue rendered.

    ``cell_times``, a list, receives ``(seconds, first line of the cell)`` for every code cell.
    """
    nb = stable_ids(jupytext.read(source))
    started = {}

    def on_start(cell, cell_index):
        started[cell_index] = time.perf_counter()

    def on_complete(cell, cell_index, **_):
        if cell_times is not None and cell_index in started:
            first = next((line for line in cell.source.splitlines() if line.strip()), "")
            cell_times.append((time.perf_counter() - started[cell_index], f"cell {cell_index}: {first[:60]}"))

    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    with tempfile.TemporaryDirectory(prefix="lm_primer_glue_") as tmp:
        glue_file = Path(tmp) / "glue.json"
        previous = os.environ.get("LM_PRIMER_GLUE_FILE")
        os.environ["LM_PRIMER_GLUE_FILE"] = str(glue_file)  # the kernel inherits it (book.glue writes there)
        try:
            # record_timing=False: no wall-clock timestamps in the cells' metadata, so that a rebuild changes no
            # byte of a notebook whose outputs did not change.
            NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                           on_cell_execute=on_start, on_cell_executed=on_complete,
                           resources={"metadata": {"path": str(CHAPTER_DIR)}}).execute()
        finally:
            if previous is None:
                os.environ.pop("LM_PRIMER_GLUE_FILE", None)
            else:
                os.environ["LM_PRIMER_GLUE_FILE"] = previous
        values = json.loads(glue_file.read_text(encoding="utf-8")) if glue_file.exists() else {}
    return stable_ids(merge_streams(render_glue(nb, values)))


def sync(source):
    """Copy a chapter's cell sources into its executed notebook, keeping the outputs, re-rendering the glue.

    For text-only edits that keep the cell structure (no re-execution). Returns the number of cells changed.
    """
    ipynb = Path(source).with_suffix(".ipynb")
    new = [c for c in jupytext.read(source).cells if c.cell_type in ("code", "markdown")]
    nb = nbformat.read(ipynb, as_version=4)
    old = [c for c in nb.cells if c.cell_type in ("code", "markdown")]
    if [c.cell_type for c in new] != [c.cell_type for c in old]:
        raise SystemExit(f"{Path(source).name}: cells added, removed or retyped; execute it instead")
    changed = 0
    for fresh, cell in zip(new, old):
        current = cell.metadata.get("lm_primer_template", cell.source)
        if fresh.source.strip() != current.strip():
            cell.source = fresh.source
            cell.metadata.pop("lm_primer_template", None)
            changed += 1
    render_glue(nb, nb.metadata.get("lm_primer", {}).get("glue", {}))
    stable_ids(nb)
    if changed:
        nbformat.write(nb, ipynb)
    return changed


def build(source):
    """Execute one chapter and write its notebook, stamped with the hash of its inputs; returns its slow cells."""
    digest = inputs_hash(source)
    cell_times = []
    nb = execute(source, cell_times=cell_times)
    nb.metadata.setdefault("lm_primer", {})["inputs_sha256"] = digest
    nbformat.write(nb, Path(source).with_suffix(".ipynb"))
    return sorted((t for t in cell_times if t[0] >= SLOW_CELL_S), reverse=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m book.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("prefixes", nargs="*", help="chapter number prefixes (default: every chapter)")
    parser.add_argument("--force", action="store_true", help="execute every selected chapter, changed or not")
    parser.add_argument("--sync", action="store_true",
                        help="execute nothing: copy text edits from the .py into the .ipynb, keeping the outputs")
    args = parser.parse_args(argv)
    sources = [p for p in chapter_sources() if any(p.name.startswith(s) for s in args.prefixes or [""])]
    if not sources:
        raise SystemExit(f"no chapter matches {args.prefixes}; chapters are {[p.name for p in chapter_sources()]}")
    if args.sync:
        for src in sources:
            print(f"{src.with_suffix('.ipynb').name}: {sync(src)} cell(s) synced")
        return
    forced = args.force or bool(args.prefixes)
    todo = [(src, "forced" if forced else is_stale(src)) for src in sources]
    todo = [(src, why) for src, why in todo if why]
    print(f"book: {len(todo)} of {len(sources)} chapter(s) to execute "
          f"({len(sources) - len(todo)} up to date); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
          flush=True)
    times = {}
    start = time.perf_counter()
    for i, (src, why) in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {src.name} ({why}) ...", flush=True)
        t0 = time.perf_counter()
        slow = build(src)
        times[src.name] = time.perf_counter() - t0
        print(f"[{i}/{len(todo)}] {src.name} done in {times[src.name]:.1f} s"
              + "".join(f"\n      {seconds:6.1f} s  {what}" for seconds, what in slow), flush=True)
    total = time.perf_counter() - start
    if times:
        print("\ntime per chapter (s):")
        for name, seconds in times.items():
            print(f"  {name:<32} {seconds:7.1f}")
        print(f"  {'total':<32} {total:7.1f}  (load average now {os.getloadavg()[0]:.1f})")
        TIMES_FILE.parent.mkdir(parents=True, exist_ok=True)
        TIMES_FILE.write_text(json.dumps({"seconds": times, "total": total, "cores": os.cpu_count(),
                                          "quick": os.environ.get("LM_PRIMER_QUICK", "0") == "1"}, indent=1))


if __name__ == "__main__":
    main()
