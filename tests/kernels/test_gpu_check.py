"""bench/gpu_check.py and the parts of bench/kernels.py that run without a GPU: the no-CUDA exit, the verdict against
the targets, the figure from partial results, the test report, and the autotune switch and buckets the check relies on.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bench.gpu_check as gpu_check
import bench.kernels as bench_kernels
from kernels import _common

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA this would run the whole check")
def test_gpu_check_without_cuda_says_so_and_exits_0():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_check"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device" in proc.stdout and "Nothing to check here" in proc.stdout


def _row(ms_ours, ms_theirs, **case):
    return dict(case, triton={"fwd": {"ms": ms_ours}}, theirs={"fwd": {"ms": ms_theirs}})


def test_ratios_hold_each_target_against_its_worst_row():
    res = {
        "attention": [dict(B=4, H=32, N=1024, d=64, causal=False, fwd_vs_flash=0.95, bwd_vs_flash=0.7),
                      dict(B=4, H=32, N=4096, d=64, causal=True, fwd_vs_flash=1.1, bwd_vs_flash=0.85)],
        "layernorm": [dict(M=4096, N=1024, triton={"fwd": {"pct_of_copy": 90.0}}, bwd_vs_torch=1.2)],
        "ffn": [dict(M=8192, d=1024, fwd_vs_torch=0.92, bwd_vs_torch=0.88, peak_vs_torch=0.7)],
    }
    r = bench_kernels.ratios(res)
    assert r["attention_fwd_vs_flash"]["worst"] == 0.95 and r["attention_fwd_vs_flash"]["met"]
    assert r["attention_bwd_vs_flash"]["worst"] == 0.7 and not r["attention_bwd_vs_flash"]["met"]
    assert r["layernorm_fwd_pct_of_copy"]["met"] and r["layernorm_bwd_vs_torch"]["met"]
    assert r["ffn_fwd_vs_torch"]["met"] and not r["ffn_bwd_vs_torch"]["met"]
    assert r["ffn_peak_vs_torch"]["met"]                        # peak memory: ours / torch's below 1 is the target
    assert set(r) == set(bench_kernels.TARGETS)
    json.dumps(r)                                               # goes into the JSON as it is


def test_ratios_skip_rows_that_failed():
    res = {"attention": [dict(B=4, H=32, N=1024, d=64, causal=False, error="RuntimeError: out of memory")],
           "layernorm": [dict(M=4096, N=1024, error="RuntimeError: out of memory")]}
    assert bench_kernels.ratios(res) == {}


def test_figure_draws_from_partial_results(tmp_path):
    def timing(rate):
        return {"ms": 1.0, "ms_p20": 0.9, "ms_p80": 1.1, "samples": 40, "rate": rate}

    res = {"device": "test", "attention": [dict(B=4, H=32, N=n, d=64, causal=False, triton={"fwd": timing(300.0),
                                                "bwd": timing(200.0)}, sdpa_flash={"fwd": timing(320.0),
                                                "bwd": {"error": "x"}}, sdpa_cudnn={"fwd": {"error": "x"},
                                                "bwd": {"error": "x"}}) for n in (1024, 4096)]
           + [dict(B=4, H=32, N=16384, d=64, causal=False, error="RuntimeError: out of memory")],
           "layernorm": [dict(M=4096, N=1024, error="RuntimeError: out of memory")]}
    path = bench_kernels.figure(res, tmp_path / "fig.png")    # no LayerNorm or FFN rows: those panels stay empty
    assert path.stat().st_size > 10_000


def test_junit_report_lists_failures(tmp_path):
    xml = tmp_path / "t.xml"
    xml.write_text('<testsuites><testsuite tests="3" failures="1" errors="0" skipped="1">'
                   '<testcase classname="a" name="ok"/><testcase classname="a" name="bad"><failure/></testcase>'
                   '<testcase classname="a" name="skip"><skipped/></testcase></testsuite></testsuites>')
    assert gpu_check._junit(xml) == {"tests": 3, "failures": 1, "errors": 0, "skipped": 1, "failed": ["a::bad"]}
    assert "error" in gpu_check._junit(tmp_path / "missing.xml")


@pytest.mark.parametrize("value,expected", [(None, None), ("all", None), ("0", 0), ("3", 3)])
def test_autotune_switch_reads_the_environment(value, expected, monkeypatch):
    if value is None:
        monkeypatch.delenv(_common.AUTOTUNE_ENV, raising=False)
    else:
        monkeypatch.setenv(_common.AUTOTUNE_ENV, value)
    assert _common.autotune_choice() == expected


@pytest.mark.parametrize("value", ["first", "-1"])
def test_autotune_switch_rejects_what_it_cannot_use(value, monkeypatch):
    monkeypatch.setenv(_common.AUTOTUNE_ENV, value)
    with pytest.raises(ValueError, match="LM_PRIMER_AUTOTUNE: expected 'all' or a configuration index"):
        _common.autotune_choice()


def test_autotune_buckets_are_powers_of_two_from_16():
    assert [_common.bucket(n) for n in (1, 16, 17, 1000, 1024, 1025, 16384)] == [16, 16, 32, 1024, 1024, 2048, 16384]


def test_the_native_test_selection_covers_every_kernel():
    """make gpu-check runs ``pytest -m gpu tests/kernels``: each kernel module must have tests under that marker
    (they come from triton_checks.DEVICES), or a new kernel would go unchecked on the GPU."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "--collect-only", "-q", "tests/kernels",
                           "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    files = {line.split("::")[0] for line in proc.stdout.splitlines() if "::" in line}
    for module in sorted((ROOT / "kernels").glob("[!_]*.py")):
        assert f"tests/kernels/test_{module.stem}_triton.py" in files, f"no -m gpu tests for kernels/{module.name}"


def test_accuracy_of_the_modern_kernels_runs_in_the_interpreter():
    """Step 2's rows for GQA attention, RMSNorm, RoPE and the SwiGLU gate, on CPU tensors in Triton's interpreter at
    small shapes, in float32: every row is produced and passes its gate (on the GPU the same code runs in bf16)."""
    if not _common.interpreting():
        pytest.skip("CPU tensors need TRITON_INTERPRET=1")
    cases = {"gqa": [dict(B=1, H=4, H_kv=2, N=24, d=16, causal=True)], "rmsnorm": [dict(M=8, N=40)],
             "rope": [dict(B=1, H=4, H_kv=2, T=12, d=16)], "swiglu": [dict(M=8, F=40)]}
    torch.manual_seed(0)
    rows = gpu_check._accuracy_modern(torch.device("cpu"), torch.float32, torch.finfo(torch.bfloat16).eps, cases)
    assert [(r["op"], r["tensor"]) for r in rows] == [
        ("gqa", "o"), ("gqa", "dq"), ("gqa", "dk"), ("gqa", "dv"), ("rmsnorm", "y"), ("rmsnorm", "dx"),
        ("rmsnorm", "dgamma"), ("rope", "qk"), ("rope", "dq"), ("rope", "dk"), ("swiglu", "h"), ("swiglu", "da"),
        ("swiglu", "db")]
    assert all(r["ok"] and r["ours_max"] < 1e-5 for r in rows), [r for r in rows if not r["ok"]]
