"""Pipeline schedules (reference/studies/pipeline.py): the simulated bubble equals (p-1)/(m+p-1) for GPipe and 1F1B,
the timelines respect every dependency, and the activations in flight are m (GPipe) and min(p - s, m) (1F1B)."""
import itertools

import numpy as np
import pytest

from reference.studies import pipeline as pp

GRID = list(itertools.product(range(1, 7), range(1, 13)))


@pytest.mark.parametrize("schedule", [pp.gpipe, pp.one_f_one_b])
@pytest.mark.parametrize("t_b", [1.0, 2.0])
def test_bubble_equals_the_formula(schedule, t_b):
    for p, m in GRID:
        t = pp.simulate(schedule(p, m), t_f=1.0, t_b=t_b)
        assert t.makespan == (m + p - 1) * (1.0 + t_b)                    # exact: sums of small integers
        assert t.bubble == pytest.approx(pp.bubble_formula(p, m), abs=1e-12)


@pytest.mark.parametrize("schedule", [pp.gpipe, pp.one_f_one_b])
def test_timelines_respect_every_dependency(schedule):
    for p, m in GRID:
        ops = pp.simulate(schedule(p, m)).ops
        end = {(o.stage, o.kind, o.micro): o.end for o in ops}
        assert len(end) == len(ops) == 2 * m * p                           # every operation once
        for o in ops:
            if o.kind == "F" and o.stage > 0:
                assert o.start >= end[(o.stage - 1, "F", o.micro)]
            if o.kind == "B":
                assert o.start >= end[(o.stage + 1, "B", o.micro) if o.stage < p - 1 else (o.stage, "F", o.micro)]
        for s in range(p):                                                 # a stage runs one operation at a time
            mine = sorted((o.start, o.end) for o in ops if o.stage == s)
            assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(mine, mine[1:]))


def test_activation_memory_per_stage():
    for p, m in GRID:
        assert list(pp.simulate(pp.gpipe(p, m)).peak_activations) == [m] * p
        assert list(pp.simulate(pp.one_f_one_b(p, m)).peak_activations) == [min(p - s, m) for s in range(p)]
    t = pp.simulate(pp.one_f_one_b(4, 8))
    times, counts = pp.activations_in_flight(t, 0)
    assert counts.max() == 4 and counts[-1] == 0 and np.all(np.diff(times) >= 0)


def test_bad_orders_and_arguments_raise():
    with pytest.raises(ValueError, match="deadlock"):
        pp.simulate([[("B", 0), ("F", 0)], [("F", 0), ("B", 0)]])        # stage 0 waits for itself
    with pytest.raises(ValueError, match="p: expected a positive integer, got 0"):
        pp.gpipe(0, 4)
    with pytest.raises(ValueError, match="positive durations"):
        pp.simulate(pp.gpipe(2, 2), t_b=0.0)
