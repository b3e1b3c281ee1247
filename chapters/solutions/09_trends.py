r"""Worked solutions to the exercises of chapter 9 ("Trends and challenges").

``tests/book/test_solutions_09.py`` checks each one.
"""
import math

import numpy as np

from reference.studies import counting, scaling_law
from reference.training import optim


def adam_update(grad, scale, eps):
    r"""Exercise 1: the first AdamW update of a parameter from ``grad * scale``, fresh state, no weight decay.

    After one step :math:`m = (1-\beta_1) g`, :math:`v = (1-\beta_2) g^2`, and with the bias corrections the update is
    :math:`-\eta\, g / (|g| + \epsilon)`: for :math:`\epsilon = 0` it is :math:`-\eta\,\mathrm{sign}(g)`, whatever
    the counting. Later steps divide a running mean of :math:`c\,g` by the square root of a running mean of
    :math:`c^2 g^2`, so a constant factor :math:`c` cancels in every step. Global-norm clipping multiplies the
    gradient by :math:`c_t = \min(1, \tau / \|g_t\|)`; only the *variation* of :math:`c_t` from step to step changes
    what Adam does. That is why clipping barely moved the AdamW runs of section 9.3, and why it rescued SGD,
    whose step is proportional to :math:`\|g\|`.

    Returns the change of the parameter (float64).
    """
    p = {"w": np.zeros_like(grad, dtype=np.float64)}
    state = optim.adamw_init(p)
    optim.adamw_step(p, {"w": np.asarray(grad, dtype=np.float64) * scale}, state, 1e-3, eps=eps, weight_decay=0.0)
    return p["w"].copy()


def adam_two_steps(grads, scales, eps=0.0):
    """Exercise 1, second part: two AdamW steps with gradient ``grads[t] * scales[t]``; the final parameter."""
    p = {"w": np.zeros_like(grads[0], dtype=np.float64)}
    state = optim.adamw_init(p)
    for g, c in zip(grads, scales):
        optim.adamw_step(p, {"w": np.asarray(g, dtype=np.float64) * c}, state, 1e-3, eps=eps, weight_decay=0.0)
    return p["w"].copy()


# The sweep of section 9.3 in full mode: non-embedding parameters and validation loss after 307,200 tokens.
SWEEP_N = (12_768, 56_640, 150_080, 311_520, 608_160)
SWEEP_LOSS = (2.4083, 2.3378, 2.2585, 2.2171, 2.1201)


def fit_power_law_with_floor(n, loss, n_grid=2000):
    r"""Exercise 2: fit :math:`L(N) = E + A N^{b}` (an irreducible loss E, as in Hoffmann et al. 2022).

    For a fixed E the rest is the straight line of ``scaling_law.fit_power_law`` on :math:`\log(L - E)`. A grid over
    :math:`E \in [0, \min L)` keeps the E whose curve :math:`E + A N^b` has the smallest squared error against the
    losses themselves (not their logs, which change with E). Returns ``(E, A, b)``. With only four or five points,
    three parameters are loosely determined: the grid's best E is a fit, not a measurement of the entropy of text.

    Applied to the sweep of section 9.3 (``SWEEP_N``, ``SWEEP_LOSS``: the full-mode run's numbers), the best floor is
    E = 0, the pure power law: the five points scatter by about 1 % about the line, and no floor lowers the error.
    This data cannot tell a floor apart from a slope; more sizes, longer runs, or both would be needed.
    """
    n = np.asarray(n, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    best = None
    for E in np.linspace(0.0, loss.min(), n_grid, endpoint=False):
        a, b, _ = scaling_law.fit_power_law(n, loss - E)
        sse = float(np.sum((E + scaling_law.power_law(n, a, b) - loss) ** 2))
        if best is None or sse < best[0]:
            best = (sse, E, math.exp(a), b)
    return best[1:]


def training_seconds(n_matmul, n_tokens, flops_per_second):
    r"""Exercise 3: the wall time that :math:`C = 6ND` predicts at a measured rate of FLOP/s.

    At the 12.0 GFLOP/s that section 9.4 measured (one BLAS thread, a shared machine), one epoch of the KJV
    (3.7 M characters) for a model of 0.5 M matmul parameters takes 6 * 5e5 * 3.7e6 / 1.2e10 = 930 s, about a
    quarter of an hour; GPT-3's 3.14e23 FLOPs take about 830,000 years.
    """
    return counting.training_flops(n_matmul, n_tokens) / flops_per_second


def gpt3_years(flops_per_second, gpt3_flops=3.14e23):
    r"""Exercise 3: GPT-3's training compute (3.14e23 FLOPs, Brown et al. 2020, table D.1) at this rate, in years."""
    return gpt3_flops / flops_per_second / (365.25 * 24 * 3600)
