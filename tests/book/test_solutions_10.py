"""The worked solutions of chapter 10's exercises (chapters/solutions/10_faq.py)."""
import importlib.util
from pathlib import Path

_PATH = Path(__file__).resolve().parents[2] / "chapters" / "solutions" / "10_faq.py"
_spec = importlib.util.spec_from_file_location("solutions_10", _PATH)  # the file name starts with a digit
sol = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sol)


def test_training_state_needs_two_devices():
    assert 7e9 * 16 / 2**30 > 80  # one device is not enough...
    assert sol.accelerators_for_training_state() == 2  # ...two are


def test_kv_cache_tokens():
    n = sol.kv_cache_tokens()
    per_token = 2 * 32 * 4096 * 2
    # n tokens fit and n + 1 do not: the answer is exact, not approximate
    assert 2 * 7e9 + n * per_token <= 80 * 2**30 < 2 * 7e9 + (n + 1) * per_token
    assert 137_000 < n < 138_000
