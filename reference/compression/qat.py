r"""Quantization-aware training (QAT) of the GPT: fine-tune float master weights through fake quantization.

Post-training quantization (PTQ) rounds a trained model's weights once, and the model never sees the rounding.
QAT keeps float *master* weights :math:`W` and runs every training step on their quantize-dequantize images
:math:`\hat W = \mathrm{deq}(\mathrm{q}(W))` (``quantize.fake_quant_forward``):

.. math::

    L(W) = \mathrm{CE}\big(\mathrm{GPT}(\hat W;\, x),\, y\big), \qquad
    \frac{\partial L}{\partial W} \approx \frac{\partial L}{\partial \hat W} \odot \mathbb 1[lo \le W \le hi]

The second factor is the straight-through estimator (``quantize.fake_quant_backward``): rounding has derivative 0
almost everywhere, so the backward treats the quantizer as the identity inside the clipping range. The gradient
is taken *at* :math:`\hat W`, so the weights move to where the rounded model is good, not the float one. The
parameters that are not quantized (embeddings, biases, LayerNorm; the choice of ``quantize.default_predicate``)
get their exact gradient, since the scales depend on :math:`W` alone. After training, ``quantize.quantize_params``
with the same options gives the deployed model, whose weights are exactly the last step's :math:`\hat W`.

:func:`finetune` runs the same loop with ``quantized=False`` (plain float fine-tuning), so that "QAT" and "fine-tune
in float, then PTQ" can be compared on the same batches and the same number of steps.
"""
import numpy as np

from reference import tree
from reference.compression import quantize
from reference.models import gpt
from reference.training import data, optim


def fake_quant_params(params, bits=4, symmetric=True, axis=None, group_size=None, clip=None, predicate=None):
    r"""Quantize-dequantize every selected tensor of a param tree, keeping what the backward needs.

    Parameters
    ----------
    params : nested param tree (GPT)
    bits, symmetric, axis, group_size, clip : as in ``quantize.quantize``
    predicate : callable ``(dotted_name, W) -> bool``, default ``quantize.default_predicate``

    Returns
    -------
    params_hat : same nesting; selected leaves replaced by :math:`\hat W`, the others shared (not copied)
    caches : dict ``{dotted_name: fake_quant cache}`` for the selected leaves
    """
    predicate = quantize.default_predicate if predicate is None else predicate
    flat, caches = {}, {}
    for name, W in tree.flatten(params).items():
        if predicate(name, W):
            flat[name], caches[name] = quantize.fake_quant_forward(W, bits, symmetric, axis, group_size, clip)
        else:
            flat[name] = W
    return tree.unflatten(flat), caches


def fake_quant_params_backward(grads_hat, caches):
    """Straight-through backward of :func:`fake_quant_params`: gradients w.r.t. the master weights.

    forward: W_hat = fake_quant(W) on the leaves in ``caches``, identity elsewhere.
    """
    flat = tree.flatten(grads_hat)
    missing = sorted(set(caches) - set(flat))
    if missing:
        raise ValueError(f"grads_hat: expected a gradient for every quantized leaf, missing {missing}")
    return tree.unflatten({name: quantize.fake_quant_backward(g, caches[name]) if name in caches else g
                          for name, g in flat.items()})


def loss_and_grads(params, config, ids, targets, bits=4, symmetric=True, axis=None, group_size=None, clip=None,
                   predicate=None):
    """The QAT loss (the cross-entropy of the fake-quantized GPT) and its STE gradients w.r.t. the master weights.

    Returns
    -------
    loss : 0-d ndarray of the params' dtype, equal to ``gpt.loss_and_grads`` of the fake-quantized params
    grads : same nesting as ``params``
    """
    params_hat, caches = fake_quant_params(params, bits, symmetric, axis, group_size, clip, predicate)
    loss, grads_hat = gpt.loss_and_grads(params_hat, config, ids, targets)
    return loss, fake_quant_params_backward(grads_hat, caches)


def finetune(params, config, train_data, steps, quantized=True, bits=4, symmetric=True, axis=None, group_size=None,
             clip=None, lr=3e-4, batch_size=8, weight_decay=0.1, grad_clip=1.0, seed=0):
    """Fine-tune a copy of the GPT ``params`` for ``steps`` AdamW steps, through fake quantization or in float.

    Parameters
    ----------
    params, config : a trained GPT (not modified)
    train_data : int array (N,), training token ids; batches from ``np.random.default_rng(seed)``
    steps : int >= 1
    quantized : True for QAT (:func:`loss_and_grads`), False for plain float fine-tuning (``gpt.loss_and_grads``);
        everything else (batches, optimizer, constant ``lr``, clipping, decay on the matrices) is the same
    bits, symmetric, axis, group_size, clip : the quantizer (``quantize.quantize``'s options)

    Returns
    -------
    params : the fine-tuned float master weights (quantize them with ``quantize.quantize_params`` and the same
        options to deploy)
    history : list of the training losses (of the fake-quantized model when ``quantized``)
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps: expected a positive integer, got {steps!r}")
    params = tree.unflatten({n: a.copy() for n, a in tree.flatten(params).items()})
    state = optim.adamw_init(params)
    rng = np.random.default_rng(seed)
    history = []
    for _ in range(steps):
        x, y = data.get_batch(train_data, batch_size, config.block_size, rng)
        if quantized:
            loss, grads = loss_and_grads(params, config, x, y, bits, symmetric, axis, group_size, clip)
        else:
            loss, grads = gpt.loss_and_grads(params, config, x, y)
        optim.clip_grad_norm(grads, grad_clip)
        optim.adamw_step(params, grads, state, lr, betas=(0.9, 0.95), weight_decay=weight_decay,
                         decay_mask=optim.decay_matrices)
        history.append(float(loss))
    return params, history
