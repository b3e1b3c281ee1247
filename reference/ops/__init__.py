"""The equations, one module per equation: ``forward(...) -> (out, cache)`` and ``backward(dout, cache) -> grads``.

Each module opens with the equation and its shapes, then the readable ``forward``/``backward`` pair written as the
derivation; where speed matters, ``forward_fast``/``backward_fast`` follow below it, tested equal to the readable pair.
Chapter 6 derives each of them; chapter 7 turns attention, LayerNorm and the FFN into kernels.
"""
