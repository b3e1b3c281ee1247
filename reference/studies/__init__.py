"""Measurements about models rather than parts of one (chapters 1 and 9).

``counting``: parameters, FLOPs and memory from a configuration; ``scaling_law``: timed training runs at a fixed
token budget and the power-law fit; ``depth``: gradient norms through deep stacks wired five ways; ``pipeline``:
the GPipe and 1F1B pipeline schedules simulated (bubble, activation memory per stage).
"""
