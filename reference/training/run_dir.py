"""The run folder of a training command: checked before the first step, locked for the run's life, never lost.

What ``python -m reference.train`` does with its ``--out`` folder and its figure path, in the order it does it:

1. :func:`check_out_dir` and :func:`figure_path` check, without leaving anything behind, that the paths can be
   written: ``--out`` is not a file and does not lie under one, a file can be created in the nearest existing
   folder (a probe file, deleted at once), the figure's extension is one that matplotlib writes. A mistake there
   costs nothing, not a run.
2. :class:`RunLock` creates the folder and takes an exclusive ``flock`` on ``<out>/.lock`` for the whole run. A
   second run into the same folder is refused at once. The kernel releases a ``flock`` when its process ends, in
   any way (a normal exit, an exception, ``kill -9``), so the lock of a killed run is stale by construction: the
   next run finds the file unlocked and takes it. The file holds the owner's pid, for the error message only.
   (``flock`` works on local file systems; over NFS it may not exclude a run on another machine.)
3. :func:`refuse_overwrite` keeps a fresh run from replacing a checkpoint that is already in the folder.
4. :class:`StopSignals` turns SIGINT (Ctrl-C) and SIGTERM into a request that the loop reads at the end of each
   step, so the run can write its checkpoint and log before it exits. A second signal is not caught: a second
   Ctrl-C interrupts at once.

Every refusal raises :class:`RunDirError`, a ``ValueError`` whose message is one line that names the path.
"""
import errno
import os
import signal
import tempfile
import threading
from pathlib import Path

LOCK_NAME = ".lock"


class RunDirError(ValueError):
    """A run folder or output path that cannot be used; raised before the first training step."""


def _nearest_existing(path):
    """The path itself or its nearest ancestor that exists (``Path('.')`` at worst)."""
    p = Path(path)
    while not (p.exists() or p.is_symlink()) and p != p.parent:
        p = p.parent
    return p


def _probe(folder, what, path):
    """Create and delete a file in ``folder``: the one test of writability that holds for root, read-only file
    systems and ACLs alike (``os.access`` answers yes to root everywhere)."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as err:
        raise RunDirError(f"{what} {path}: cannot create files in {folder} ({err.strerror or err})") from err


def _check_writable_below(path, what):
    """``path`` does not exist yet: its nearest existing ancestor must be a folder we may create entries in."""
    base = _nearest_existing(path)
    if not base.is_dir():
        raise RunDirError(f"{what} {path}: {base} is a file, not a folder, so nothing can be created under it")
    _probe(base, what, path)


def check_out_dir(out):
    """Check that ``out`` is, or can become, a folder we can write in; creates nothing. Returns ``Path(out)``."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise RunDirError(f"--out {out} is a file; expected a folder for the run (its checkpoint and log)")
        _probe(out, "--out", out)
    else:
        _check_writable_below(out, "--out")
    return out


def _figure_formats():
    from matplotlib.backend_bases import FigureCanvasBase

    return sorted(FigureCanvasBase.get_supported_filetypes())


def figure_path(path, default_name):
    """Where a figure given as ``path`` goes, checked: ``path`` itself, or ``path/default_name`` for a folder.

    A folder is a path that exists as one or that ends with a path separator (``--figure figs/``). A file path
    needs an extension that matplotlib writes (``.png``, ``.pdf``, ``.svg``, ...); without one, matplotlib would
    silently write ``path.png`` instead of ``path``. Creates nothing.
    """
    raw = str(path)
    path = Path(path)
    if path.is_dir() or raw.endswith(("/", os.sep)):
        path = path / default_name
    formats = _figure_formats()
    ext = path.suffix.lower().lstrip(".")
    if ext not in formats:
        got = f"'.{ext}'" if ext else "no extension"
        raise RunDirError(f"--figure {path}: expected a file name ending in one of "
                          f"{', '.join('.' + f for f in formats)} (or a folder), got {got}")
    if path.exists():
        if path.is_dir():
            raise RunDirError(f"--figure {path} is a folder; expected a file name")
        if not os.access(path, os.W_OK):
            raise RunDirError(f"--figure {path}: no permission to overwrite this file")
        _probe(path.parent, "--figure", path)
    else:
        _check_writable_below(path, "--figure")
    return path


def refuse_overwrite(checkpoint_path, resume=None, overwrite=False):
    """Refuse to start a run whose checkpoint file would replace an existing one it does not continue from.

    A run may write over ``checkpoint_path`` if it is resuming from that very file, or if ``overwrite`` is set.
    """
    checkpoint_path = Path(checkpoint_path)
    if overwrite or not (checkpoint_path.exists() or checkpoint_path.is_symlink()):
        return
    if resume is not None and Path(resume).exists() and os.path.samefile(resume, checkpoint_path):
        return
    raise RunDirError(f"{checkpoint_path} already holds a checkpoint; continue it with --resume {checkpoint_path}, "
                      f"choose another --out, or replace it with --overwrite")


class RunLock:
    """An exclusive lock on a run folder, held from ``__enter__`` to ``__exit__``; creates the folder.

    On exit (normal or by an exception) it releases the lock, removes the lock file, and removes the folders it
    created if they are still empty (a run refused before its first step leaves nothing behind).
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd = None
        self._created = []

    def __enter__(self):
        import fcntl

        missing = []
        p = self.folder
        while not p.exists() and p != p.parent:
            missing.append(p)
            p = p.parent
        try:
            for p in reversed(missing):
                p.mkdir()
                self._created.append(p)
            while True:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    owner = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
                    os.close(fd)
                    raise RunDirError(f"{self.folder} is in use by another training run (process {owner}, lock file "
                                      f"{self.path}); wait for it to finish or choose another --out") from None
                # the previous owner may have removed the file between our open and our lock: then we hold a lock
                # on a file nobody else can see, and must start again
                try:
                    same = os.path.samestat(os.fstat(fd), os.stat(self.path))
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(fd)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode("ascii"))
            self._fd = fd
        except OSError as err:
            self._cleanup()
            raise RunDirError(f"--out {self.folder}: cannot write there ({err.strerror or err})") from err
        return self

    def __exit__(self, *exc):
        self._cleanup()
        return False

    def _cleanup(self):
        if self._fd is not None:
            try:
                os.unlink(self.path)       # while still locked, so no other run can be holding this file
            except FileNotFoundError:
                pass
            os.close(self._fd)             # closing releases the flock
            self._fd = None
        for p in reversed(self._created):
            try:
                p.rmdir()
            except OSError as err:
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    raise
                break
        self._created = []


class StopSignals:
    """Within ``with StopSignals() as stop:``, SIGINT and SIGTERM set ``stop.signal`` instead of ending the process.

    The first signal is recorded and the default handlers are put back, so a second one acts at once (Ctrl-C raises
    ``KeyboardInterrupt``, SIGTERM ends the process). On exit the handlers that were there before are restored.
    Outside the main thread signals cannot be caught, and this does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signal = None
        self._previous = {}

    def _handle(self, signum, frame):
        self.signal = signal.Signals(signum)
        for s in self.SIGNALS:
            signal.signal(s, signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
        return False

    @property
    def exit_code(self):
        """The shell's convention for a process ended by a signal: 128 + its number (130 for SIGINT)."""
        return 128 + int(self.signal)
