r"""Worked solutions to the exercises of chapter 13 ("Training at scale").

``tests/book/test_solutions_13.py`` checks each one.
"""
import numpy as np

from reference.ops import ffn
from reference.studies import pipeline, sharding


def zero3_bytes_per_step(n_params, n_ranks, bytes_per=2):
    r"""Exercise 1: bytes each rank sends per step under ZeRO-3, and under plain data parallelism.

    ZeRO-3 keeps 1/N of the 16-bit weights on each rank. Before a layer's forward pass the ranks all-gather its weights
    (each sends :math:`(N-1)/N` of the layer's bytes), and again before its backward pass, since they were freed in
    between; the gradients are then reduce-scattered (another :math:`(N-1)/N`). Over all layers:
    :math:`3 (N-1)/N \cdot \Psi` against the all-reduce's :math:`2 (N-1)/N \cdot \Psi`: 1.5 times as much.

    Returns ``(zero3, data_parallel)`` in bytes.
    """
    one_pass = (n_ranks - 1) / n_ranks * n_params * bytes_per        # an all-gather or a reduce-scatter of all weights
    return 3 * one_pass, sharding.ring_bytes(n_params * bytes_per, n_ranks)


def micro_batches_for_bubble(p, below):
    r"""Exercise 2: the fewest micro-batches m with a bubble :math:`(p-1)/(m+p-1)` strictly below ``below``.

    :math:`(p-1)/(m+p-1) < \beta \iff m > (p-1)(1/\beta - 1)`; for p = 8 and 5 %: m > 133, so m = 134.
    Returns ``(m, GPipe timeline, 1F1B timeline)``, simulated: GPipe's first stage then holds m micro-batches'
    activations, 1F1B's p.
    """
    bound = (p - 1) * (1 / below - 1)
    m = int(np.floor(bound)) + 1
    while pipeline.bubble_formula(p, m) >= below:                  # guard against the floor's round-off
        m += 1
    return m, pipeline.simulate(pipeline.gpipe(p, m)), pipeline.simulate(pipeline.one_f_one_b(p, m))


def tensor_parallel_ffn(x, W1, b1, W2, b2, dy, t, activation="gelu_tanh"):
    r"""Exercise 3: the FFN split over t simulated ranks, forward and backward, in one process.

    Rank r keeps columns :math:`r F/t .. (r+1) F/t` of :math:`W_1` and :math:`b_1` and the same rows of :math:`W_2`.
    Forward: each rank's ``ffn.forward`` without :math:`b_2` gives a partial output; :math:`g` adds them (an
    all-reduce), then :math:`b_2` is added once. Backward: :math:`g`'s backward hands every rank the same ``dy``; each
    rank's ``ffn.backward`` gives its shards of :math:`dW_1, db_1, dW_2` and a partial :math:`dx`, which :math:`f`'s
    backward adds up (the all-reduce): :math:`x` fed every rank's hidden units.

    Returns ``(y, dx, dW1, db1, dW2, db2)`` with the shards concatenated, to compare with the unsplit FFN.
    """
    cols = np.split(np.arange(W1.shape[1]), t)
    partial_y, caches = [], []
    for c in cols:
        y_r, cache = ffn.forward(x, W1[:, c], b1[c], W2[c, :], None, activation)
        partial_y.append(y_r)
        caches.append(cache)
    y = sum(partial_y) + b2                                          # g: the all-reduce, then the bias once
    grads = [ffn.backward(dy, cache) for cache in caches]            # g's backward: the same dy on every rank
    dx = sum(g[0] for g in grads)                                    # f's backward: the all-reduce of the partial dx
    dW1 = np.concatenate([g[1] for g in grads], axis=1)
    db1 = np.concatenate([g[2] for g in grads])
    dW2 = np.concatenate([g[3] for g in grads], axis=0)
    db2 = dy.reshape(-1, dy.shape[-1]).sum(axis=0)
    return y, dx, dW1, db1, dW2, db2
