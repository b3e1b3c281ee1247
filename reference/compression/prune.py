r"""Pruning (material §2.2): remove weights, heads and FFN neurons, and fine-tune with the masks held fixed.

Three methods, on the nested parameter trees of the GPT (``reference/models/gpt.py``) and of the BERT encoder
(``reference/models/bert.py``):

1. **Unstructured magnitude pruning.** Keep the weights of largest :math:`|w|`. With target sparsity :math:`s`
   over :math:`N` weights, exactly :math:`k = \mathrm{round}(sN)` weights are set to zero:

   - ``scope="global"``: one threshold over all prunable matrices together (a matrix of small weights loses more);
   - ``scope="layer"``: every prunable matrix loses ``round(s * n_i)`` of its own ``n_i`` weights.

   Ties at the threshold are broken by position (the tree's order, then row-major order inside a matrix), so the
   number of zeros is exactly ``k``, whatever the values.
   *Prunable* (the default :func:`prunable`): the 2-D weight matrices, **except** the embedding tables (GPT's
   ``wte``, which is also the tied output head, and ``wpe``; BERT's ``*_embeddings``). Biases, LayerNorm gains and
   shifts and embeddings get no mask (``None`` in the masks tree): they are a small share of the parameters, and
   zeroing a row of an embedding table deletes a token.

2. **Structured pruning** of attention heads and FFN neurons. A head :math:`h` owns the column block
   :math:`[h d_k, (h+1) d_k)` of :math:`W^Q, W^K, W^V` (and those entries of :math:`b^Q, b^K, b^V`) and the same
   *row* block of :math:`W^O`; an FFN neuron :math:`j` owns column :math:`j` of :math:`W_1`, entry :math:`j` of
   :math:`b_1` and row :math:`j` of :math:`W_2`. A pruned unit is **zeroed**, not cut out: the shapes, and so the
   config (``n_head``, ``d_ff``), stay as they are, and the same masks work in a training loop. With its rows of
   :math:`W^O` (of :math:`W_2`) at zero a unit adds nothing to the residual stream, and its zeroed
   :math:`Q, K, V` columns make its attention uniform over zero values, so nothing it computes survives.
   (Physically shrinking the matrices would save the compute too; it needs a per-layer head count that the
   reference models do not have.)

   Importance scores (lower = pruned first), for a unit :math:`u` whose output is gated by :math:`\xi_u = 1`:

   - ``"taylor"`` (Michel, Levy & Neubig 2019, eq. 4): :math:`I_u = \mathbb{E}_{\text{batch}}
     \left|\partial L / \partial \xi_u\right|`, the first-order estimate of the loss change when the unit is
     removed. Since the unit's output enters as :math:`\xi_u\, a_u W^{out}_{[u]}` and
     :math:`\partial L / \partial W^{out}_{[u]} = a_u^\top \delta`, the gate's gradient is
     :math:`\partial L / \partial \xi_u = \langle W^{out}_{[u]},\, \partial L / \partial W^{out}_{[u]} \rangle_F`:
     it comes from the ordinary weight gradients, no extra pass (``W^{out}`` is ``Wo`` for heads, ``W2`` for
     neurons). It needs a loss and its gradients, so it is for the GPT.
   - ``"weight"``: :math:`\|W^V_{[u]}\|_F \, \|W^O_{[u]}\|_F` for a head (its output is
     :math:`P (x W^V_{[u]} + b^V_{[u]}) W^O_{[u]}` with :math:`P` row-stochastic, so its size is bounded by the
     product of the two norms, up to the bias), :math:`\|W_1[:, j]\|_2 \|W_2[j]\|_2` for a neuron. Data-free;
     works for any model, BERT included.
   - ablation (:func:`ablation_head_scores`): the measured effect of removing each head alone, given any metric;
     exact but one evaluation per head. Used for MiniLM, where there is no backward pass.

3. **Gradual pruning** (Zhu & Gupta 2017) inside the training loop: the sparsity follows the cubic schedule
   :func:`cubic_sparsity`, the masks are recomputed every few steps and held fixed in between by
   :func:`masked_adamw_step`, which masks the gradients *and* AdamW's two moments, then re-applies the mask to the
   weights after the step. Why the moments: a weight pruned after training keeps its old :math:`m, v`, and
   ``p -= lr * m / (sqrt(v) + eps)`` would revive it. With :math:`g = m = v = 0` and :math:`p = 0` the update is
   :math:`0 \cdot (1 - \eta\lambda) - \eta \cdot 0 / (0 + \epsilon) = 0` exactly, so decoupled weight decay cannot
   revive it either; the re-application afterwards only guards that argument.

Masks are trees of the same nesting as the parameters, with a bool array (True = keep) for each masked leaf and
``None`` elsewhere. :func:`reference.tree.flatten`/:func:`reference.tree.unflatten` convert both to dotted names.
"""
import time

import numpy as np

from reference import tree
from reference._checks import check_float
from reference.models import bert, gpt
from reference.ops import cross_entropy
from reference.training import data, optim

SCOPES = ("global", "layer")
_EMBEDDING_SUFFIXES = ("wte", "wpe", "embeddings")


# ---------------------------------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------------------------------

def prunable(name, W):
    """Default choice of what magnitude pruning may touch: 2-D weight matrices, except embedding tables."""
    return W.ndim == 2 and not name.split(".")[-1].endswith(_EMBEDDING_SUFFIXES)


def _check_sparsity(sparsity):
    number = isinstance(sparsity, (int, float, np.integer, np.floating)) and not isinstance(sparsity, bool)
    if not (number and 0.0 <= float(sparsity) < 1.0):
        raise ValueError(f"sparsity: expected a number in [0, 1) (the fraction of weights set to zero), "
                         f"got {sparsity!r}")
    return float(sparsity)


def _smallest(values, k):
    """Bool mask of the ``k`` smallest entries of the 1-D ``values``; ties go to the lower index.

    ``np.partition`` finds the k-th smallest value ``v`` in O(n); every entry below ``v`` is taken, then the first
    entries equal to ``v`` in index order until there are exactly ``k``.
    """
    out = np.zeros(values.shape, dtype=bool)
    if k == 0:
        return out
    v = np.partition(values, k - 1)[k - 1]
    out[values < v] = True
    equal = np.flatnonzero(values == v)                      # in index order
    out[equal[:k - int(out.sum())]] = True
    return out


def magnitude_masks(params, sparsity, scope="global", predicate=None):
    r"""Masks that zero the ``round(sparsity * N)`` smallest-magnitude prunable weights.

    Parameters
    ----------
    params : nested dict / list of float arrays (GPT or BERT)
    sparsity : float in [0, 1)
    scope : "global" (one threshold over all prunable matrices) or "layer" (each matrix to the same sparsity)
    predicate : callable ``(dotted_name, W) -> bool``, default :func:`prunable`

    Returns
    -------
    masks : same nesting as ``params``; bool array (True = keep) for each prunable leaf, ``None`` for the others.
        Exactly ``round(sparsity * N)`` False entries (global) or ``round(sparsity * n_i)`` per matrix (layer).
    """
    s = _check_sparsity(sparsity)
    if scope not in SCOPES:
        raise ValueError(f"scope: expected one of {SCOPES}, got {scope!r}")
    predicate = prunable if predicate is None else predicate
    flat = tree.flatten(params)
    names = [n for n, W in flat.items() if predicate(n, check_float(n, W))]
    if not names:
        raise ValueError("magnitude_masks: no prunable arrays in params (the predicate selected none)")
    masks = {n: None for n in flat}
    if scope == "global":
        mags = np.concatenate([np.abs(flat[n]).ravel() for n in names])    # (N,)
        k = int(round(s * mags.size))
        keep = ~_smallest(mags, k)                                         # (N,)
        start = 0
        for n in names:
            size = flat[n].size
            masks[n] = keep[start:start + size].reshape(flat[n].shape)
            start += size
        assert int(keep.size - keep.sum()) == k
    else:
        for n in names:
            k = int(round(s * flat[n].size))
            masks[n] = ~_smallest(np.abs(flat[n]).ravel(), k).reshape(flat[n].shape)
            assert int(masks[n].size - masks[n].sum()) == k
    return tree.unflatten(masks)


def apply_masks(arrays, masks, in_place=False):
    """Zero the entries of ``arrays`` where its mask is False; leaves whose mask is ``None`` are left as they are.

    ``arrays`` is a params, grads or optimizer-moment tree; ``masks`` must have its nesting and, where not ``None``,
    bool arrays of the leaf's shape. Returns a new tree (unmasked leaves shared, not copied) or, with
    ``in_place=True``, ``arrays`` itself, modified.
    """
    flat, fmask = tree.flatten(arrays), tree.flatten(masks)
    if set(flat) != set(fmask):
        missing, extra = sorted(set(flat) - set(fmask)), sorted(set(fmask) - set(flat))
        raise ValueError(f"masks do not match the tree: missing {missing}, unexpected {extra}")
    out = {}
    for name, a in flat.items():
        m = fmask[name]
        if m is None:
            out[name] = a
            continue
        if not isinstance(m, np.ndarray) or m.dtype != np.bool_:
            got = m.dtype if isinstance(m, np.ndarray) else type(m).__name__
            raise TypeError(f"masks['{name}']: expected a bool ndarray (True = keep) or None, got {got}")
        if m.shape != a.shape:
            raise ValueError(f"masks['{name}']: expected shape {a.shape} (the array's), got {m.shape}")
        if in_place:
            a[~m] = 0
            out[name] = a
        else:
            out[name] = np.where(m, a, a.dtype.type(0))
    return arrays if in_place else tree.unflatten(out)


def sparsity_of(params, predicate=None):
    """Fraction of exact zeros over the arrays ``predicate`` selects (default :func:`prunable`)."""
    predicate = prunable if predicate is None else predicate
    arrays = [W for n, W in tree.flatten(params).items() if predicate(n, W)]
    total = sum(W.size for W in arrays)
    return sum(int((W == 0).sum()) for W in arrays) / total if total else 0.0


# ---------------------------------------------------------------------------------------------------------------
# Structured pruning: attention heads and FFN neurons
# ---------------------------------------------------------------------------------------------------------------

def _units(params):
    """Dotted-name prefixes of each layer's attention and FFN dicts, ``blocks.i.attn`` / ``blocks.i.ffn`` (GPT and
    BERT alike)."""
    if isinstance(params, dict) and "blocks" in params:
        return [(f"blocks.{i}.attn", f"blocks.{i}.ffn") for i in range(len(params["blocks"]))]
    raise ValueError("params: expected a GPT or BERT tree (with 'blocks')")


def _check_n_head(n_head, C):
    if isinstance(n_head, bool) or not isinstance(n_head, (int, np.integer)) or n_head < 1 or C % n_head:
        raise ValueError(f"n_head: expected a positive integer dividing d_model={C}, got {n_head!r}")
    return int(n_head), C // int(n_head)


def _check_units(units, n_layer, n_units, what):
    out = []
    for u in units:
        if len(u) != 2 or not (0 <= u[0] < n_layer and 0 <= u[1] < n_units):
            raise ValueError(f"{what}: expected (layer, index) pairs with layer in [0, {n_layer}) and index in "
                             f"[0, {n_units}), got {u!r}")
        out.append((int(u[0]), int(u[1])))
    return out


def structured_masks(params, n_head, heads=(), neurons=()):
    r"""Masks that remove whole attention heads and FFN neurons (zeroing, shapes unchanged).

    Parameters
    ----------
    params : GPT or BERT tree
    n_head : int
        Heads per layer (``GPTConfig.n_head``, ``BertConfig.n_head``).
    heads : iterable of (layer, head)
        Zeroes columns :math:`[h d_k, (h+1) d_k)` of Wq, Wk, Wv, those entries of bq, bk, bv, and those rows of Wo.
    neurons : iterable of (layer, j)
        Zeroes column j of W1, entry j of b1 and row j of W2.

    Returns
    -------
    masks : same nesting as params; bool arrays on the attention and FFN leaves, ``None`` on the others.
    """
    flat = tree.flatten(params)
    units = _units(params)
    C = flat[units[0][0] + ".Wq"].shape[0]
    F = flat[units[0][1] + ".W1"].shape[1]
    n_head, d_k = _check_n_head(n_head, C)
    heads = _check_units(heads, len(units), n_head, "heads")
    neurons = _check_units(neurons, len(units), F, "neurons")
    masks = {n: None for n in flat}
    for attn, ffn in units:
        names = [f"{attn}.{leaf}" for leaf in ("Wq", "Wk", "Wv", "Wo", "bq", "bk", "bv")]
        names += [f"{ffn}.{leaf}" for leaf in ("W1", "b1", "W2")]
        for name in names:
            masks[name] = np.ones(flat[name].shape, dtype=bool)
    for layer, h in heads:
        attn = units[layer][0]
        cols = slice(h * d_k, (h + 1) * d_k)
        for leaf in ("Wq", "Wk", "Wv"):
            masks[f"{attn}.{leaf}"][:, cols] = False
        for leaf in ("bq", "bk", "bv"):
            masks[f"{attn}.{leaf}"][cols] = False
        masks[f"{attn}.Wo"][cols, :] = False
    for layer, j in neurons:
        ffn = units[layer][1]
        masks[f"{ffn}.W1"][:, j] = False
        masks[f"{ffn}.b1"][j] = False
        masks[f"{ffn}.W2"][j, :] = False
    return tree.unflatten(masks)


def head_importance(params, n_head, method="weight", grads=None):
    r"""Importance of every attention head, (n_layer, n_head); lower is pruned first.

    ``method="weight"``: :math:`\|W^V_{[h]}\|_F \|W^O_{[h]}\|_F`. ``method="taylor"``: the mean over ``grads``
    (a list of gradient trees, one per batch) of :math:`|\langle W^O_{[h]}, \partial L/\partial W^O_{[h]}\rangle_F|`,
    Michel et al.'s :math:`|\partial L/\partial \xi_h|` (module docstring).
    """
    return _importance(params, n_head, method, grads, heads=True)


def neuron_importance(params, method="weight", grads=None):
    r"""Importance of every FFN neuron, (n_layer, d_ff); lower is pruned first.

    ``method="weight"``: :math:`\|W_1[:, j]\|_2 \|W_2[j]\|_2`. ``method="taylor"``: the mean over ``grads`` of
    :math:`|\langle W_2[j], \partial L/\partial W_2[j]\rangle|`, the first-order loss change of removing neuron j.
    """
    return _importance(params, 1, method, grads, heads=False)


def _importance(params, n_head, method, grads, heads):
    flat = tree.flatten(params)
    units = _units(params)
    C = flat[units[0][0] + ".Wq"].shape[0]
    n_head, d_k = _check_n_head(n_head, C)
    if method not in ("weight", "taylor"):
        raise ValueError(f"method: expected 'weight' or 'taylor', got {method!r}")
    if method == "taylor" and not grads:
        raise ValueError("method='taylor' needs grads: a non-empty list of gradient trees (one per batch)")
    flat_grads = [tree.flatten(g) for g in grads] if method == "taylor" else []
    scores = []
    for attn, ffn in units:
        if heads:
            W_out = flat[f"{attn}.Wo"].reshape(n_head, d_k, C)                # (H, d_k, C) row blocks
            W_in = flat[f"{attn}.Wv"].reshape(C, n_head, d_k)                 # (C, H, d_k) column blocks
            out_name = f"{attn}.Wo"
        else:
            W_out = flat[f"{ffn}.W2"][:, None, :]                             # (F, 1, C) one row per neuron
            W_in = flat[f"{ffn}.W1"][:, :, None]                              # (C, F, 1) one column per neuron
            out_name = f"{ffn}.W2"
        if method == "weight":
            s = np.sqrt((W_in.astype(np.float64) ** 2).sum(axis=(0, 2))) \
                * np.sqrt((W_out.astype(np.float64) ** 2).sum(axis=(1, 2)))  # (units,)
        else:
            s = np.mean([np.abs((W_out * g[out_name].reshape(W_out.shape)).sum(axis=(1, 2), dtype=np.float64))
                         for g in flat_grads], axis=0)                          # (units,)
        scores.append(s)
    return np.stack(scores)


def ablation_head_scores(params, n_head, evaluate):
    """``evaluate(params with head (l, h) removed)`` for every head: (n_layer, n_head). With ``evaluate`` a loss
    (or 1 - cosine to the dense model), a low score means the model barely notices the head's removal."""
    n_layer = len(_units(params))
    scores = np.zeros((n_layer, n_head))
    for layer in range(n_layer):
        for h in range(n_head):
            scores[layer, h] = float(evaluate(apply_masks(params, structured_masks(params, n_head, [(layer, h)]))))
    return scores


def lowest(scores, k):
    """The ``k`` lowest entries of a (n_layer, n_units) score table as (layer, index) pairs, lowest first; ties go
    to the earlier (layer, index)."""
    scores = np.asarray(scores)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= scores.size:
        raise ValueError(f"k: expected an integer in [0, {scores.size}], got {k!r}")
    order = np.argsort(scores.ravel(), kind="stable")[:k]
    return [divmod(int(i), scores.shape[1]) for i in order]


# ---------------------------------------------------------------------------------------------------------------
# Gradual pruning with fine-tuning
# ---------------------------------------------------------------------------------------------------------------

def cubic_sparsity(step, final_sparsity, begin, end, initial_sparsity=0.0):
    r"""Zhu & Gupta (2017), eq. 1: the sparsity at ``step``.

    .. math:: s_t = s_f + (s_i - s_f) \left(1 - \frac{t - t_0}{t_1 - t_0}\right)^3, \qquad t \in [t_0, t_1]

    :math:`s_i` before :math:`t_0`, :math:`s_f` after :math:`t_1`. The cube prunes fast while many weights are
    redundant and slowly near the end, when each removal costs more.
    """
    s_f, s_i = _check_sparsity(final_sparsity), _check_sparsity(initial_sparsity)
    if not 0 <= begin < end:
        raise ValueError(f"cubic_sparsity: expected 0 <= begin < end, got begin={begin}, end={end}")
    frac = min(max((step - begin) / (end - begin), 0.0), 1.0)
    return s_f + (s_i - s_f) * (1.0 - frac) ** 3


def masked_adamw_step(params, grads, state, masks, lr, **adamw_kwargs):
    """One AdamW step that keeps masked weights exactly zero (in place, like ``optim.adamw_step``).

    forward order: g <- g * mask;  m <- m * mask;  v <- v * mask;  AdamW step;  p <- p * mask.
    ``grads`` is not modified (a masked copy is used).
    """
    grads = apply_masks(grads, masks)
    apply_masks(state["m"], masks, in_place=True)
    apply_masks(state["v"], masks, in_place=True)
    optim.adamw_step(params, grads, state, lr, **adamw_kwargs)
    apply_masks(params, masks, in_place=True)
    return params, state


def _copy(params):
    return tree.unflatten({n: a.copy() for n, a in tree.flatten(params).items()})


def validation_loss(params, config, val_data, batch_size=8, n_batches=8, seed=0, block_size=None):
    """Mean next-token cross-entropy over ``n_batches`` windows of ``val_data`` drawn with a fixed seed, so that
    every model evaluated with the same arguments sees the same text. Windows are ``block_size`` tokens long
    (default ``config.block_size``; a shorter one compares models of different context lengths on equal text)."""
    rng = np.random.default_rng(seed)
    block_size = config.block_size if block_size is None else block_size
    losses = []
    for _ in range(n_batches):
        x, y = data.get_batch(val_data, batch_size, block_size, rng)
        logits, _ = gpt.forward(params, config, x)
        losses.append(float(cross_entropy.forward(logits, y)[0]))
    return float(np.mean(losses))


def gradual_prune(params, config, train_data, steps, final_sparsity, scope="global", prune_every=10,
                  prune_fraction=0.75, lr=1e-3, batch_size=8, weight_decay=0.1, grad_clip=1.0, seed=0):
    """Fine-tune a copy of the GPT ``params`` while its sparsity rises to ``final_sparsity`` (cubic schedule).

    The masks are recomputed by magnitude every ``prune_every`` steps during the first ``prune_fraction`` of the
    steps (the last recomputation lands on the schedule's end, at ``final_sparsity`` exactly; if that end is the
    last step, after it), then held for the rest, which only fine-tunes. AdamW starts with zero moments; they are
    masked at every step, so each newly pruned weight loses its moments the step it is pruned. Every step is :func:`masked_adamw_step` with AdamW at a constant ``lr``,
    weight decay on the matrices (``optim.decay_matrices``) and global-norm clipping.

    Returns
    -------
    params : the pruned, fine-tuned copy (``params`` itself is untouched)
    masks : the final masks
    history : list of (step, train loss, sparsity)
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps: expected a positive integer, got {steps!r}")
    _check_sparsity(final_sparsity)
    if isinstance(prune_every, bool) or not isinstance(prune_every, (int, np.integer)) or prune_every < 1:
        raise ValueError(f"prune_every: expected a positive integer, got {prune_every!r}")
    if not 0.0 < prune_fraction <= 1.0:
        raise ValueError(f"prune_fraction: expected a number in (0, 1], got {prune_fraction!r}")
    params = _copy(params)
    state = optim.adamw_init(params)
    rng = np.random.default_rng(seed)
    end = max(1, int(round(prune_fraction * steps)))
    masks, history = None, []
    for step in range(steps):
        if step <= end and (step % prune_every == 0 or step == end):
            s = cubic_sparsity(step, final_sparsity, 0, end)
            masks = magnitude_masks(params, s, scope=scope)
            apply_masks(params, masks, in_place=True)
        x, y = data.get_batch(train_data, batch_size, config.block_size, rng)
        loss, grads = gpt.loss_and_grads(params, config, x, y)
        optim.clip_grad_norm(grads, grad_clip)
        masked_adamw_step(params, grads, state, masks, lr, betas=(0.9, 0.95), weight_decay=weight_decay,
                          decay_mask=optim.decay_matrices)
        history.append((step + 1, float(loss), sparsity_of(params)))
    if end >= steps:
        masks = magnitude_masks(params, final_sparsity, scope=scope)
        apply_masks(params, masks, in_place=True)
    return params, masks, history


# ---------------------------------------------------------------------------------------------------------------
# Measurements for the chapter
# ---------------------------------------------------------------------------------------------------------------

def sparsity_sweep(params, config, val_data, sparsities, finetune_steps=0, train_data=None, scope="global",
                   batch_size=8, eval_batches=8, lr=1e-3, seed=0):
    """Validation loss of the GPT against unstructured sparsity, one-shot and after gradual pruning.

    Parameters
    ----------
    params, config : a trained GPT
    val_data : int array (N,), validation token ids
    sparsities : iterable of floats in [0, 1)
    finetune_steps : int
        0: one-shot only. Otherwise :func:`gradual_prune` runs that many steps on ``train_data`` per sparsity
        (the 0 % row then shows what the same fine-tuning does to the dense model).
    scope, batch_size, eval_batches, lr, seed : see :func:`magnitude_masks`, :func:`validation_loss`,
        :func:`gradual_prune`

    Returns
    -------
    list of dicts with keys ``"sparsity"``, ``"achieved"``, ``"loss_oneshot"``, ``"loss_finetuned"`` (None without
    fine-tuning) and ``"seconds"``, one per sparsity.
    """
    if finetune_steps and train_data is None:
        raise ValueError("sparsity_sweep: finetune_steps > 0 needs train_data (the fine-tuning text)")
    rows = []
    for s in sparsities:
        t0 = time.perf_counter()
        pruned = apply_masks(params, magnitude_masks(params, s, scope=scope))
        row = {"sparsity": float(s), "achieved": sparsity_of(pruned),
               "loss_oneshot": validation_loss(pruned, config, val_data, batch_size, eval_batches, seed),
               "loss_finetuned": None}
        if finetune_steps:
            tuned, _, _ = gradual_prune(params, config, train_data, finetune_steps, s, scope=scope, lr=lr,
                                        batch_size=batch_size, seed=seed)
            row["loss_finetuned"] = validation_loss(tuned, config, val_data, batch_size, eval_batches, seed)
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
    return rows


def heads_pruned_vs_cosine(sentences, counts, params=None, config=None, method="ablation"):
    """Sentence-embedding cosine of a head-pruned BERT (default: the installed all-MiniLM-L6-v2) to the dense one.

    Parameters
    ----------
    sentences : list of str
    counts : iterable of int, numbers of heads to remove (the lowest-scoring first, over all layers)
    params, config : from ``bert.from_pretrained``; default the installed model
    method : "ablation" (score = 1 - mean cosine with that head alone removed; one pass over ``sentences`` per
        head) or "weight" (:func:`head_importance`, data-free)

    Returns
    -------
    rows : list of dicts ``{"heads_pruned", "fraction", "mean_cosine", "min_cosine"}``
    scores : (n_layer, n_head) importance table used for the order
    """
    if (params is None) != (config is None):
        raise ValueError("params and config: pass both (from bert.from_pretrained) or neither (the default model)")
    if params is None:
        params, config = bert.from_pretrained()
    n_head = config.n_head
    dense = bert.embed_sentences(sentences, params, config)              # (N, C) unit rows

    def cosines(p):
        return (bert.embed_sentences(sentences, p, config) * dense).sum(axis=1)   # (N,)

    if method == "ablation":
        scores = ablation_head_scores(params, n_head, lambda p: 1.0 - float(cosines(p).mean()))
    elif method == "weight":
        scores = head_importance(params, n_head, "weight")
    else:
        raise ValueError(f"method: expected 'ablation' or 'weight', got {method!r}")
    rows = []
    total = scores.size
    for k in counts:
        cos = cosines(apply_masks(params, structured_masks(params, n_head, lowest(scores, k))))
        rows.append({"heads_pruned": int(k), "fraction": k / total, "mean_cosine": float(cos.mean()),
                     "min_cosine": float(cos.min())})
    return rows, scores
