"""Triton kernels for attention, LayerNorm and the FFN, each with a torch.autograd.Function wrapper.

They run natively on a CUDA GPU, or in Triton's CPU interpreter when ``TRITON_INTERPRET=1`` is set before this
package is imported. NumPy twins: ``reference/ops/attention.py``, ``reference/ops/layernorm.py``, ``reference/ops/ffn.py``.
On a GPU, ``LM_PRIMER_AUTOTUNE`` steers the autotuning (``kernels/_common.py``); ``make gpu-check`` tests and times
them there, and ``tests/kernels/aot_sm90.py`` compiles every variant for sm_90 on a machine without one.
"""
from .attention import flash_attention
from .ffn import fused_ffn
from .layernorm import layer_norm
from .rmsnorm import rms_norm
from .rope import rope
from .swiglu import swiglu_gate

__all__ = ["flash_attention", "fused_ffn", "layer_norm", "rms_norm", "rope", "swiglu_gate"]
