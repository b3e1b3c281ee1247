"""Triton kernels for attention (grouped-query too), LayerNorm, the FFN, RMSNorm, RoPE and the SwiGLU gate, each with
a torch.autograd.Function wrapper.

They run natively on a CUDA GPU, or in Triton's CPU interpreter when ``TRITON_INTERPRET=1`` is set before this
package is imported. NumPy twins: ``reference/ops/attention.py`` (and ``gqa.py``), ``layernorm.py``, ``ffn.py``,
``rmsnorm.py``, ``rope.py``, ``swiglu.py``.
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
