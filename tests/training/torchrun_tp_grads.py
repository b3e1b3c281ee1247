"""Run under torchrun by tests/training/test_tensor_parallel.py: tensor-parallel gradients against one process.

Every rank computes the single-process loss and gradients itself (the same seed, the same batch), then its
tensor-parallel share, for each split ``--tp`` given on the command line (the world is W/tp data-parallel replicas of
tp ranks); the shares are gathered to the full format and compared. It also checks that f's and g's backward passes
are the adjoints of their forward passes across ranks. Rank 0 prints one JSON line of the largest differences.
"""
import json
import sys

import numpy as np


def _adjoint_gaps(tp_):
    """f and g are linear maps between the ranks' arrays: backward must be the adjoint, <F x, dy> = <x, F^T dy>, with
    the inner product of the distributed arrays (a sum over ranks for a per-rank array, one term for a shared one)."""
    from reference.training import distributed

    rng = np.random.default_rng(100 + distributed.rank())                # different numbers on every rank
    shared = np.random.default_rng(7).standard_normal(5)                 # the same on every rank
    x_t, dy_t = rng.standard_normal(5), rng.standard_normal(5)
    total = lambda v: distributed.all_reduce(np.array([v]), group="tp")[0]   # noqa: E731  sum over the tp ranks
    # f: shared x -> per-rank y = x;  <f(x), dy>_ranks = sum_t <x, dy_t>  vs  <x, f_backward(dy)>
    f_gap = total(np.dot(tp_.f_forward(shared), dy_t)) - np.dot(shared, tp_.f_backward(dy_t.copy()))
    # g: per-rank x_t -> shared y = sum_t x_t;  <g(x), dy>  vs  sum_t <x_t, g_backward(dy)>
    g_gap = np.dot(tp_.g_forward(x_t.copy()), shared) - total(np.dot(x_t, tp_.g_backward(shared)))
    return abs(f_gap), abs(g_gap)


def main(splits):
    from reference import tree
    from reference.models import gpt
    from reference.training import blockwise, data_parallel, distributed, recompute
    from reference.training import tensor_parallel as tp_

    distributed.init()
    out = {}
    for tp in splits:
        distributed.init_groups(tp)
        for dtype in (np.float32, np.float64):
            config = gpt.GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=4, d_model=32)
            params = gpt.init_params(config, np.random.default_rng(0), dtype=dtype)
            x, y = (np.random.default_rng(1).integers(0, 65, (4, 16)) for _ in range(2))
            loss1, g1 = gpt.loss_and_grads(params, config, x, y)
            local = tp_.shard(params, distributed.rank("tp"), tp)
            key = f"tp={tp} {np.dtype(dtype).name}"
            shares = {}
            for name, blocks in (("tp", tp_.BLOCKS), ("tp+recompute", recompute.recomputed(tp_.BLOCKS))):
                loss, shares[name] = blockwise.loss_and_grads(local, config, x, y, blocks)
                f1, f = tree.flatten(g1), tree.flatten(tp_.gather(shares[name]))
                scale = max(float(np.abs(a).max()) for a in f1.values())
                out[f"{key} {name}"] = {"loss": abs(float(loss) - float(loss1)) / float(loss1),
                                        "grads": max(float(np.abs(f[k] - f1[k]).max()) for k in f1) / scale,
                                        "shapes": all(f[k].shape == f1[k].shape for k in f1)}
            a, b = (tree.flatten(shares[n]).values() for n in ("tp", "tp+recompute"))
            out[f"{key} recompute exact"] = all(np.array_equal(u, v) for u, v in zip(a, b))
            # the whole parameters' gradients: the same bits on every tensor-parallel rank
            whole = {k: a for k, a in tree.flatten(shares["tp"]).items() if tp_.split_axis(k) is None}
            out[f"{key} whole identical"] = data_parallel.replicas_agree(whole, group="tp")
        out[f"tp={tp} adjoint gaps"] = _adjoint_gaps(tp_)
    if distributed.rank() == 0:
        sys.stdout.write(json.dumps(out) + "\n")
    distributed.destroy()


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]])
