"""Measurements about models rather than parts of one (chapters 1, 4, 9 and 11).

``counting``: parameters, FLOPs and memory from a configuration; ``scaling_law``: timed training runs at a fixed
token budget and the power-law fit; ``depth``: gradient norms through deep stacks wired five ways;
``attention_heads``: the attention weights of a trained GPT and what each head attends to; ``regularisation``: the
GPT trained to overfit with and without LayerNorm and dropout; ``pipeline``: the GPipe and 1F1B pipeline schedules
simulated (bubble, activation memory per stage).
"""
