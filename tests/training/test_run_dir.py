"""reference/training/run_dir.py: the run folder's lock (exclusive, released on any exit, stale after a kill), path
checks that create nothing, and the signal guard."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from reference.training import run_dir

ROOT = Path(__file__).resolve().parents[2]


def hold_lock(folder):
    """A child process that takes the lock on ``folder``, says so, and sleeps."""
    script = textwrap.dedent(f"""
        import sys, time
        from reference.training import run_dir
        with run_dir.RunLock({str(folder)!r}):
            print("locked", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_lock_is_refused_and_released_on_exit(tmp_path):
    folder = tmp_path / "run"
    with run_dir.RunLock(folder):
        assert (folder / ".lock").read_text().strip() == str(os.getpid())
        # flock belongs to an open file: a second open in the same process conflicts like another process would
        with pytest.raises(run_dir.RunDirError, match=rf"{folder} is in use by another training run "
                                                       rf"\(process {os.getpid()}"):
            with run_dir.RunLock(folder):
                pass
        (folder / "checkpoint.npz").write_bytes(b"x")
    assert sorted(os.listdir(folder)) == ["checkpoint.npz"]          # lock file gone, the run's files kept
    with run_dir.RunLock(folder):                                    # and free again
        pass


def test_the_lock_is_released_by_an_exception_and_an_empty_new_folder_removed(tmp_path):
    folder = tmp_path / "a" / "b"
    with pytest.raises(RuntimeError):
        with run_dir.RunLock(folder):
            assert folder.is_dir()
            raise RuntimeError("a refusal before the first step")
    assert not (tmp_path / "a").exists()                             # nothing left behind


def test_a_live_process_holds_the_lock_and_a_killed_one_does_not(tmp_path):
    folder = tmp_path / "run"
    proc = hold_lock(folder)
    try:
        with pytest.raises(run_dir.RunDirError, match=f"process {proc.pid}"):
            with run_dir.RunLock(folder):
                pass
    finally:
        proc.kill()
        proc.wait()
    assert (folder / ".lock").exists()            # SIGKILL ran no cleanup: the file stays, stale
    with run_dir.RunLock(folder):                 # and the kernel released the lock with the process
        assert (folder / ".lock").read_text().strip() == str(os.getpid())


def test_paths_are_checked_without_creating_anything(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(run_dir.RunDirError, match="is a file; expected a folder"):
        run_dir.check_out_dir(a_file)
    with pytest.raises(run_dir.RunDirError, match=f"{a_file} is a file, not a folder"):
        run_dir.check_out_dir(a_file / "run")
    assert run_dir.check_out_dir(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert run_dir.figure_path(tmp_path / "loss.pdf", "x.png") == tmp_path / "loss.pdf"
    assert run_dir.figure_path(tmp_path, "x.png") == tmp_path / "x.png"                  # an existing folder
    assert run_dir.figure_path(f"{tmp_path}/figs/", "x.png") == tmp_path / "figs" / "x.png"   # a folder to be
    with pytest.raises(run_dir.RunDirError, match=r"expected a file name ending in one of .*\.png.*got '\.txt'"):
        run_dir.figure_path(tmp_path / "fig.txt", "x.png")
    with pytest.raises(run_dir.RunDirError, match="got no extension"):
        run_dir.figure_path(tmp_path / "loss", "x.png")
    with pytest.raises(run_dir.RunDirError, match="is a file, not a folder"):
        run_dir.figure_path(a_file / "loss.png", "x.png")
    assert sorted(os.listdir(tmp_path)) == ["file.txt"]


def unwritable_folders(tmp_path):
    """Folders this process cannot write in: a 0o500 folder (not for root, whom permissions do not stop) and /sys
    (for root too: creating files there is refused)."""
    found = []
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        found.append(locked)
    if Path("/sys").is_dir():
        found.append(Path("/sys"))
    return found


def test_unwritable_paths_are_refused(tmp_path):
    folders = unwritable_folders(tmp_path)
    if not folders:
        pytest.skip("no unwritable folder on this machine")
    for folder in folders:
        with pytest.raises(run_dir.RunDirError, match="cannot create files in"):
            run_dir.check_out_dir(folder / "run")
        with pytest.raises(run_dir.RunDirError, match="cannot create files in"):
            run_dir.figure_path(folder / "loss.png", "x.png")


def test_refuse_overwrite(tmp_path):
    ckpt = tmp_path / "checkpoint.npz"
    run_dir.refuse_overwrite(ckpt)                                   # nothing there yet
    ckpt.write_bytes(b"x")
    with pytest.raises(run_dir.RunDirError, match=r"already holds a checkpoint; continue it with --resume"):
        run_dir.refuse_overwrite(ckpt)
    run_dir.refuse_overwrite(ckpt, overwrite=True)
    run_dir.refuse_overwrite(ckpt, resume=ckpt)                      # continuing it is what --resume is for
    other = tmp_path / "other.npz"
    other.write_bytes(b"y")
    with pytest.raises(run_dir.RunDirError):
        run_dir.refuse_overwrite(ckpt, resume=other)                 # continuing another run would replace this one


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stop_signals_record_the_first_signal_and_restore_handlers(sig):
    before = {s: signal.getsignal(s) for s in run_dir.StopSignals.SIGNALS}
    with run_dir.StopSignals() as stop:
        os.kill(os.getpid(), sig)
        time.sleep(0.01)                                             # let the handler run
        assert stop.signal == sig and stop.exit_code == 128 + sig
        # the first signal put the default handlers back: a second Ctrl-C would act at once
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert {s: signal.getsignal(s) for s in run_dir.StopSignals.SIGNALS} == before
