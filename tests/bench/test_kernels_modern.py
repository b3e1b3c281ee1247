"""bench/kernels_modern.py where no GPU is: it skips cleanly, and its figure draws from a result of the shape it
records (the sweep itself needs CUDA, so a plotting bug would otherwise first show on the GPU machine)."""
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
