"""Multi-process runs for the tests: the training command on the corpus's first 100 000 characters under torchrun.

``launch(...)`` (imported by the tests) starts ``torchrun --standalone --nproc_per_node=W`` on this file, whose
``__main__`` cuts the corpus (Genesis 1 to 4, as tests/training/test_train.py does in-process) and calls
``reference.train.main``. Each launch costs a few seconds, mostly importing torch in every process.

With ``KILL_RANK_AT=R:S`` in the environment, rank R kills itself with SIGKILL (no clean-up, as a crashed or
preempted machine) when it starts step S, on the group's first start only: the fault test then checks that
``torchrun --max-restarts`` restarts the group and that the run resumes from its last checkpoint.
"""
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
N_CHARS = 100_000


def launch(nproc, args, max_restarts=0, env=None, timeout=300):
    """Run the training command on ``nproc`` ranks; returns the CompletedProcess (output captured as text)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1", **(env or {}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           f"--max-restarts={max_restarts}", __file__, *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _main(argv):
    from reference import train
    from reference.training import data, distributed

    head = data.load_corpus()[:N_CHARS]
    train.data.load_corpus = lambda: head
    kill = os.environ.get("KILL_RANK_AT")
    if kill and distributed.restart_count() == 0:
        rank, at = (int(v) for v in kill.split(":"))
        step_fn = train.train_step

        def train_step(*args, **kwargs):
            if distributed.rank() == rank and args[6] == at:        # args: params, opt_state, config, run, x, y, step
                os.kill(os.getpid(), signal.SIGKILL)
            return step_fn(*args, **kwargs)

        train.train_step = train_step
    train.main(argv)


if __name__ == "__main__":
    _main(sys.argv[1:])
