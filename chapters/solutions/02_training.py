r"""Worked solutions to the exercises of chapter 2 ("Training: data, initialisation, gradient descent, iteration").

``tests/book/test_solutions_02.py`` checks each one, the first against ``reference/training/optim.py`` and the second against
``optim.noam``.
"""
import math

import numpy as np

from reference.training import optim


def first_adam_update(g, lr, eps=0.0):
    r"""Exercise 1: the change that the first Adam step makes to a parameter with gradient ``g``.

    At step 1, from zero moments: :math:`m = (1 - \beta_1) g` and :math:`v = (1 - \beta_2) g^2`, so the
    bias-corrected moments are :math:`\hat m = g` and :math:`\hat v = g^2`, and

    .. math:: \Delta p = -\eta \frac{\hat m}{\sqrt{\hat v} + \epsilon} = -\eta \frac{g}{|g| + \epsilon}
              \;\xrightarrow{\epsilon \to 0}\; -\eta \operatorname{sign}(g).

    Every coordinate moves by :math:`\eta`, whatever the size of its gradient: Adam's step is set by the learning
    rate alone, SGD's by :math:`\eta \|g\|`. That is why SGD needs a learning rate two orders of magnitude larger in
    the chapter's comparison (gradient entries there are around :math:`10^{-3}`). With the default
    :math:`\epsilon = 10^{-8}`, coordinates whose gradient is not much larger than :math:`\epsilon` move less.

    Parameters
    ----------
    g : ndarray, the gradient (float32 or float64)
    lr : float
    eps : float, default 0 (the limit of the derivation)

    Returns
    -------
    delta : ndarray like ``g``, the new parameter minus the old one (measured with ``optim.adam_step``).
    """
    p0 = np.zeros_like(g)
    params = {"p": p0.copy()}
    state = optim.adam_init(params)
    optim.adam_step(params, {"p": g}, state, lr, eps=eps)
    return params["p"] - p0


def noam_peak(d_model, warmup):
    r"""Exercise 2: where and how high the paper's schedule peaks.

    :math:`t^{-1/2}` falls and :math:`t\,w^{-3/2}` rises; the minimum of the two is largest where they cross,
    :math:`t^{-1/2} = t\,w^{-3/2} \iff t^{3/2} = w^{3/2} \iff t = w`. The peak rate is
    :math:`d_{model}^{-1/2} w^{-1/2} = (d_{model}\, w)^{-1/2}`: 6.99e-4 for the base model (512, 4000).

    Returns
    -------
    (step, lr) : (int, float)
    """
    return warmup, (d_model * warmup) ** -0.5


def bits_per_char(loss_nats_per_token, chars_per_token):
    r"""Exercise 3: a loss in nats per token as bits per character, :math:`\ell / (r \ln 2)`.

    Nats to bits divides by :math:`\ln 2`; a token stands for :math:`r` characters, so the cost of the text is
    spread over :math:`r` times as many characters. The char model at 1.60 nats/token: 2.31 bits/char; the BPE model
    at 4.20 nats/token and 3.0 chars/token: 2.02 bits/char, so the BPE model is better although its per-token loss
    is more than twice as high.
    """
    return loss_nats_per_token / (chars_per_token * math.log(2))
