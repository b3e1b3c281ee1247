"""bench/kernels_modern.py where no GPU is: it skips cleanly, and its figure draws from a result of the shape it
records (the sweep itself needs CUDA, so a plotting bug would otherwise first show on the GPU machine)."""
import pytest
import torch

from bench import kernels_modern


def _entry(pct):
    return {"fwd": {"ms": 1.0, "gbps": 10 * pct, "pct_of_copy": pct}, "bwd": {"error": "RuntimeError: no shape"}}


def test_skips_without_cuda():
    if not torch.cuda.is_available():
        assert kernels_modern.run(quick=True) == {"skipped": kernels_modern.SKIPPED}


def test_figure_draws_a_recorded_result(tmp_path):
    res = {"device": "test", "rmsnorm": [dict(c, triton=_entry(80), torch=_entry(60)) for c in kernels_modern.FULL["rmsnorm"]],
           "rope": [dict(c, triton=_entry(70), torch=_entry(30), liger=_entry(65)) for c in kernels_modern.FULL["rope"]],
           "swiglu": [dict(c, triton=_entry(90), torch=_entry(50)) for c in kernels_modern.FULL["swiglu"]]}
    path = tmp_path / "fig.png"
    kernels_modern._figure(res, path)
    assert path.stat().st_size > 10_000


def _gqa_entry(tf):
    return {"fwd": {"ms": 1.0, "tflops": tf}, "bwd": {"ms": 2.0, "tflops": tf / 2}}


def test_figure_draws_the_gqa_panel(tmp_path):
    res = {"device": "test", "rmsnorm": [dict(c, triton=_entry(80)) for c in kernels_modern.FULL["rmsnorm"]],
           "gqa": [dict(c, triton=_gqa_entry(400), torch=_gqa_entry(450), triton_repeated_kv=_gqa_entry(380))
                   for c in kernels_modern.FULL["gqa"]]}
    path = tmp_path / "fig.png"
    kernels_modern._figure(res, path)                   # panels for the ops present only
    assert path.stat().st_size > 10_000


def test_gqa_rows_run_in_the_interpreter():
    """The GQA section's wiring (providers, FLOP counts, TFLOP/s) on CPU tensors in Triton's interpreter, with a
    stand-in for do_bench (which needs a GPU): every provider gives a forward and a backward rate."""
    from kernels._common import interpreting

    if not interpreting():
        return
    import kernels

    def bench(fn, quantiles):
        fn()
        return 1.0, 0.9, 1.1                                # ms: only the arithmetic of the rates is checked

    case = dict(B=1, H=4, H_kv=2, N=32, d=16, causal=True)
    row, = kernels_modern._gqa(kernels, None, bench, [case], "cpu", torch.float32, None)
    flops = 4.0 * 4 * 32 * 32 * 16 * 0.5
    for name in ("triton", "torch", "triton_repeated_kv"):
        assert row[name]["fwd"]["tflops"] == pytest.approx(flops / 1e-3 / 1e12)
        assert row[name]["bwd"]["tflops"] == pytest.approx(2.5 * flops / 1e-3 / 1e12)
