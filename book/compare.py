"""Did a rebuild change anything but the measurements? Compare the chapter notebooks with a git revision.

    python -m book.compare            # working tree against HEAD
    python -m book.compare REV        # against another revision

For each chapter notebook it reports the cells whose sources or outputs differ from ``REV``, leaving out the cells
tagged ``measurement`` (times, speeds, memory peaks: they measure the machine). It exits with 1 if any other cell
differs, so ``make book FORCE=1`` twice followed by this command checks that the book is reproducible. Figures are
compared by git itself (``git status figures``); the measurement figures are listed in the README.
"""
import subprocess
import sys

import nbformat

from book.build import CHAPTER_DIR, ROOT


def _cells(nb):
    """Per cell: (source, outputs) with measurement cells blanked, so that positions still line up."""
    out = []
    for cell in nb.cells:
        if "measurement" in cell.metadata.get("tags", []):
            out.append(("measurement", None))
        else:
            out.append((cell.source, [dict(o) for o in cell.get("outputs", [])]))
    return out


def compare(rev="HEAD"):
    """Names of the chapter notebooks whose non-measurement cells differ from ``rev``, with the cell numbers."""
    changed = {}
    for ipynb in sorted(CHAPTER_DIR.glob("[0-9][0-9]_*.ipynb")):
        rel = ipynb.relative_to(ROOT).as_posix()
        old = subprocess.run(["git", "show", f"{rev}:{rel}"], cwd=ROOT, capture_output=True, text=True)
        if old.returncode:
            changed[ipynb.name] = "not in " + rev
            continue
        a = _cells(nbformat.reads(old.stdout, as_version=4))
        b = _cells(nbformat.read(ipynb, as_version=4))
        if len(a) != len(b):
            changed[ipynb.name] = f"{len(a)} cells in {rev}, {len(b)} now"
            continue
        cells = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
        if cells:
            changed[ipynb.name] = f"cells {cells}"
    return changed


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    rev = argv[0] if argv else "HEAD"
    changed = compare(rev)
    for name, what in changed.items():
        print(f"{name}: differs from {rev} outside the measurement cells: {what}")
    if not changed:
        print(f"every chapter notebook equals {rev} outside the measurement cells")
    sys.exit(1 if changed else 0)


if __name__ == "__main__":
    main()
