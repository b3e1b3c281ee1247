"""The torch.distributed engine (reference/training/distributed.py): identities in one process, and every collective
on NumPy arrays in a real two-rank gloo group under torchrun, writing into the arrays' own memory."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from reference.training import distributed

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_one_process_needs_no_group_and_no_torch():
    # run in a fresh interpreter: importing the module, init and every collective leave torch unimported
    code = textwrap.dedent("""
        import sys
        import numpy as np
        from reference.training import distributed as d
        assert d.init() == (0, 1) and d.is_main()
        a = np.arange(4.0)
        assert d.all_reduce(a, "mean") is a and np.array_equal(a, np.arange(4.0))
        assert np.array_equal(d.all_gather(a), a[None]) and np.array_equal(d.reduce_scatter(a), a)
        assert d.broadcast(a) is a
        d.barrier(); d.destroy()
        assert "torch" not in sys.modules
    """)
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("WORLD_SIZE", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_no_other_module_of_the_package_imports_torch():
    import pathlib
    import re

    package = pathlib.Path(ROOT) / "reference"
    importers = [str(f.relative_to(package)) for f in sorted(package.rglob("*.py"))
                 if re.search(r"^\s*(import torch|from torch)", f.read_text(encoding="utf-8"), re.M)]
    assert importers == ["training/distributed.py"]


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="expected 'sum' or 'mean'"):
        distributed.all_reduce(np.ones(2), op="max")


COLLECTIVES = """
import sys

import numpy as np
from reference.training import distributed as d

rank, world = d.init()
assert world == 2 and d.launched_world_size() == 2 and d.restart_count() == 0
a = np.arange(6, dtype=np.float32) + 10 * rank                   # rank 0: 0..5, rank 1: 10..15
buf = a.copy()
assert d.all_reduce(buf) is buf                                  # in place, in the array's memory
assert np.array_equal(buf, np.arange(6) * 2 + 10)
assert np.array_equal(d.all_reduce(a.copy(), "mean"), np.arange(6) + 5.0)
assert np.array_equal(d.all_gather(a), np.stack([np.arange(6), np.arange(6) + 10]))
assert np.array_equal(d.reduce_scatter(a), (np.arange(6) * 2 + 10)[3 * rank:3 * rank + 3])
b = np.full(3, float(rank))
assert np.array_equal(d.broadcast(b, src=1), np.ones(3))
h = np.ones(4, dtype=np.float16) * (rank + 1)                   # float16 travels too
assert d.all_reduce(h).dtype == np.float16 and (h == 3).all()
for bad, message in ((np.ones((4, 4))[:, 0], "C-contiguous"), (np.ones(5), "multiple of the world size 2")):
    try:
        d.reduce_scatter(bad) if bad.ndim == 1 and bad.flags.c_contiguous else d.all_reduce(bad)
    except ValueError as err:
        assert message in str(err), err
    else:
        raise AssertionError("no error")
d.barrier()
d.destroy()
sys.stdout.write(f"rank {rank} ok\\n")   # one write: the two ranks share the pipe
"""


@pytest.mark.slow
def test_collectives_on_two_ranks(tmp_path):
    script = tmp_path / "collectives.py"
    script.write_text(COLLECTIVES)
    env = dict(os.environ, PYTHONPATH=ROOT, OPENBLAS_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script)], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0 ok" in done.stdout and "rank 1 ok" in done.stdout
