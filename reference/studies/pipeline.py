r"""Pipeline parallelism on paper: the GPipe and 1F1B schedules, simulated step by step.

A model of L layers is cut into p **stages** of L/p layers, one per device. A batch is cut into m **micro-batches**.
Stage s can run the forward pass of micro-batch j once stage s-1 has finished it, and its backward pass once stage
s+1 has finished the backward pass of j (and s its own forward of j). The schedule is the order in which each stage
takes its 2m operations:

- **GPipe** (Huang et al. 2019): every stage runs the m forwards, then the m backwards.
- **1F1B** (PipeDream-Flush, Narayanan et al. 2021): stage s runs ``p - 1 - s`` forwards to fill the pipe, then
  alternates one forward and one backward, then drains the remaining backwards.

With a forward taking :math:`t_f` and a backward :math:`t_b` on every stage, both schedules take
:math:`(m + p - 1)(t_f + t_b)`, of which each stage computes :math:`m (t_f + t_b)`: the idle **bubble** is

.. math:: \frac{(p - 1)(t_f + t_b)}{(m + p - 1)(t_f + t_b)} = \frac{p - 1}{m + p - 1}

of the time, so m >> p hides it. They differ in memory: a stage must keep the activations of every micro-batch
whose forward it has run and whose backward it has not. GPipe keeps all m at the turn; 1F1B keeps at most
``min(p - s, m)`` on stage s, p on the first stage, whatever m is. (Activation recomputation trades this memory for
a second forward.)

:func:`simulate` runs a schedule: each stage takes its next operation as soon as the stage is free and the
operation's inputs exist, which gives the timeline (who computes what, when), the makespan, the measured bubble and
each stage's activations in flight. Communication between stages is taken as free.
"""
from typing import NamedTuple

import numpy as np


class Op(NamedTuple):
    """One operation of the timeline: ``stage`` runs the ``kind`` ("F" or "B") pass of ``micro`` in [start, end)."""

    stage: int
    kind: str
    micro: int
    start: float
    end: float


class Timeline(NamedTuple):
    """The simulated schedule: ``ops`` in start order, the ``makespan``, the measured ``bubble`` (idle fraction of
    p x makespan), and ``peak_activations[s]``, the most micro-batches stage s holds activations for at once."""

    ops: list
    makespan: float
    bubble: float
    peak_activations: np.ndarray


def _check(p, m):
    for name, v in (("p", p), ("m", m)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}: expected a positive integer, got {v!r}")


def gpipe(p, m):
    """Per stage, the GPipe order: ``[("F", 0), ..., ("F", m-1), ("B", 0), ..., ("B", m-1)]``."""
    _check(p, m)
    return [[("F", j) for j in range(m)] + [("B", j) for j in range(m)] for _ in range(p)]


def one_f_one_b(p, m):
    """Per stage, the 1F1B order: ``p - 1 - s`` warm-up forwards, then forward/backward pairs, then backwards."""
    _check(p, m)
    orders = []
    for s in range(p):
        warmup = min(p - 1 - s, m)
        order = [("F", j) for j in range(warmup)]
        for i in range(m - warmup):
            order += [("F", warmup + i), ("B", i)]
        order += [("B", j) for j in range(m - warmup, m)]
        orders.append(order)
    return orders


def bubble_formula(p, m):
    """The idle fraction of both schedules, :math:`(p - 1) / (m + p - 1)`."""
    _check(p, m)
    return (p - 1) / (m + p - 1)


def simulate(orders, t_f=1.0, t_b=2.0):
    """Run per-stage operation orders (from :func:`gpipe` or :func:`one_f_one_b`); returns the :class:`Timeline`.

    Each stage starts its next operation at the later of: when the stage is free, and when the operation's input
    is ready (F of j on stage s: F of j on s-1; B of j on s: B of j on s+1, or F of j on the last stage).
    """
    if not (t_f > 0 and t_b > 0):
        raise ValueError(f"t_f, t_b: expected positive durations, got {t_f}, {t_b}")
    p = len(orders)
    done = {}                                          # (stage, kind, micro) -> end time
    nxt = [0] * p                                      # index of each stage's next operation
    free = [0.0] * p                                   # when each stage is free
    ops = []
    while any(nxt[s] < len(orders[s]) for s in range(p)):
        progressed = False
        for s in range(p):
            if nxt[s] == len(orders[s]):
                continue
            kind, j = orders[s][nxt[s]]
            if kind == "F":
                dep = (s - 1, "F", j) if s > 0 else None
            else:
                dep = (s + 1, "B", j) if s < p - 1 else (s, "F", j)
            if dep is not None and dep not in done:
                continue                               # its input does not exist yet
            start = max(free[s], done[dep] if dep is not None else 0.0)
            end = start + (t_f if kind == "F" else t_b)
            done[(s, kind, j)] = free[s] = end
            ops.append(Op(s, kind, j, start, end))
            nxt[s] += 1
            progressed = True
        if not progressed:
            raise ValueError("the orders deadlock: every stage waits for an operation no stage can run")
    ops.sort(key=lambda op: (op.start, op.stage))
    makespan = max(op.end for op in ops)
    busy = sum(op.end - op.start for op in ops)
    peak = np.array([max(np.cumsum([1 if op.kind == "F" else -1 for op in ops if op.stage == s])) for s in range(p)])
    return Timeline(ops, makespan, 1.0 - busy / (p * makespan), peak)


def activations_in_flight(timeline, stage):
    """``(times, counts)``: the micro-batches whose activations ``stage`` holds, as a step function of time
    (a forward adds one when it ends, a backward frees one when it ends)."""
    events = sorted((op.end, 1 if op.kind == "F" else -1) for op in timeline.ops if op.stage == stage)
    times = np.array([0.0] + [t for t, _ in events])
    counts = np.concatenate([[0], np.cumsum([d for _, d in events])])
    return times, counts
