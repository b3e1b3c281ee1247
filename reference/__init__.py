"""LM Primer's NumPy reference: one module per equation, pure ``forward``/``backward`` pairs.

Every op takes float32 or float64 arrays and returns its input's dtype. Nothing here imports torch or triton.
"""
