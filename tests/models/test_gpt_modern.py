"""reference/models/gpt.py as today's decoder: Llama and Mixtral against Hugging Face (logits, aux loss, gradients by
torch autograd), whole-model float64 finite differences, each switch of the config on its own, and the config checks.
Budget: about 15 s on one core (most of it importing transformers and finite differences of the MoE model).

The oracles are randomly initialised ``LlamaForCausalLM`` and ``MixtralForCausalLM`` built offline from small
configs, with fewer K/V heads than query heads and untied embeddings, every parameter perturbed away from its init
(so that a gradient that ignored a norm gain would show). Hugging Face computes in float32 where we do not: RMSNorm
upcasts to float32, RoPE's angles are float32 (``reference/ops/rope.py``), and the router's softmax is float32. So the
comparison is in float32, with sequences shorter than 16 so that float32 angles stay exact to ~1e-6.
"""
import dataclasses

import numpy as np
import pytest

from reference import tree
from reference.gradcheck import RTOL_FD, check_grads, numerical_grad, rel_error
from reference.inference import decoding
from reference.models import gpt
from reference.ops import attention, cross_entropy

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

HF_SIZES = dict(vocab_size=50, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=16, tie_word_embeddings=False,
                attn_implementation="eager")
MIXTRAL = dict(num_local_experts=4, num_experts_per_tok=2, router_aux_loss_coef=0.02, experts_implementation="eager")


# smaller still for the finite differences, which perturb every parameter twice (2 x 1,000-1,600 forward passes)
FD_SIZES = dict(HF_SIZES, vocab_size=13, hidden_size=8, intermediate_size=6, num_attention_heads=2,
                num_key_value_heads=1)


def hf_model(kind, seed=0, sizes=HF_SIZES, n_expert=4):
    torch.manual_seed(seed)
    if kind == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**sizes, rms_norm_eps=1e-6))
    else:
        model = transformers.MixtralForCausalLM(transformers.MixtralConfig(**sizes, **dict(MIXTRAL,
                                                                                          num_local_experts=n_expert)))
    model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def load(kind, model, dtype=np.float32):
    sd = {k: v.detach().numpy().astype(dtype) for k, v in model.state_dict().items()}
    return (gpt.from_hf_llama if kind == "llama" else gpt.from_hf_mixtral)(sd, model.config.to_dict())


def perturbed(params, rng, scale=0.3):
    flat = tree.flatten(params)
    return tree.unflatten({k: v + scale * rng.standard_normal(v.shape).astype(v.dtype) for k, v in flat.items()})


@pytest.fixture(scope="module", params=["llama", "mixtral"])
def hf(request):
    return request.param, hf_model(request.param)


def test_config_and_parameters_read_from_hugging_face(hf):
    kind, model = hf
    params, config = load(kind, model)
    assert (config.norm, config.positional, config.ffn, config.bias, config.tie_embeddings) == \
        ("rmsnorm", "rope", "swiglu", False, False)
    assert (config.n_head, config.n_kv_head, config.d_ff, config.block_size) == (4, 2, 40, 16)
    assert config.rope_theta == (10000.0 if kind == "llama" else 1e6) and config.ln_eps == (1e-6 if kind == "llama"
                                                                                           else 1e-5)
    if kind == "mixtral":
        assert (config.n_expert, config.top_k, config.aux_loss_coef) == (4, 2, 0.02)
    assert gpt.n_params(params) == sum(p.numel() for p in model.parameters())
    assert params["blocks"][0]["attn"]["Wk"].shape == (32, 16)                 # 2 K/V heads of d_k = 8
    back = gpt.to_hf_llama(params, config)                                    # and back, bit for bit
    sd = model.state_dict()
    assert set(back) == set(sd) and all(np.array_equal(back[k], sd[k].numpy()) for k in back)


# float32 on both sides; the logits agree to 3e-7 of their largest entry (measured; float32 round-off through two
# blocks, the router and the untied head) and the gradients to 7e-7. 1e-5 leaves a margin and still fails for a
# missing term, a transposed projection, the interleaved RoPE layout or an unrenormalised router (errors >= 1e-2).
TOL32 = 1e-5


def test_logits_aux_loss_and_gradients_match_hugging_face(hf, rng):
    kind, model = hf
    params, config = load(kind, model)
    ids = rng.integers(0, config.vocab_size, size=(3, 11))
    targets = rng.integers(0, config.vocab_size, size=(3, 11))
    logits, cache = gpt.forward(params, config, ids)
    out = model(torch.from_numpy(ids), output_router_logits=kind == "mixtral")
    assert rel_error(logits, out.logits.detach().numpy()) < TOL32
    # the loss transformers trains Mixtral with: cross-entropy + router_aux_loss_coef * load-balancing loss
    loss_t = torch.nn.functional.cross_entropy(out.logits.reshape(-1, config.vocab_size),
                                               torch.from_numpy(targets).reshape(-1))
    if kind == "mixtral":
        assert abs(float(gpt.aux_loss(cache)) - out.aux_loss.item()) < TOL32 * out.aux_loss.item()
        loss_t = loss_t + config.aux_loss_coef * out.aux_loss
    loss_t.backward()
    loss, grads = gpt.loss_and_grads(params, config, ids, targets)
    assert abs(float(loss) - loss_t.item()) < TOL32 * loss_t.item()
    ours = gpt.to_hf_llama(grads, config)
    for name, p in model.named_parameters():
        assert rel_error(ours[name], p.grad.numpy()) < TOL32, name


@pytest.mark.parametrize("kind", ["llama", "mixtral"])
def test_gradients_match_finite_differences(kind, rng):
    """Every parameter of a loaded model (H = 2, H_kv = 1; Mixtral with 3 experts), in float64, against central
    differences of the cross-entropy (+ 0.02 times the load-balancing loss for Mixtral)."""
    params, config = load(kind, hf_model(kind, sizes=FD_SIZES, n_expert=3), np.float64)
    ids = rng.integers(0, config.vocab_size, size=(2, 5))
    targets = rng.integers(0, config.vocab_size, size=(2, 5))
    _, grads = gpt.loss_and_grads(params, config, ids, targets)

    def f():
        logits, cache = gpt.forward(params, config, ids)
        return float(cross_entropy.forward(logits, targets)[0] + config.aux_loss_coef * gpt.aux_loss(cache))

    if kind == "mixtral":
        # the choice of experts is a step function: the differences are valid only if no token's k-th and (k+1)-th
        # router probabilities are so close that a step of h = 1e-6 in a weight could swap them
        for c in gpt.forward(params, config, ids)[1].blocks:
            p = np.sort(c.ffn.routing.probs, axis=1)[:, ::-1]
            assert (p[:, config.top_k - 1] - p[:, config.top_k]).min() > 1e-4
    # Tolerance: RTOL_FD of reference/gradcheck.py (float64 central differences, h = 1e-6)
    check_grads(f, tree.flatten(params), tree.flatten(grads))


def test_each_switch_matches_finite_differences(rng):
    """Each change of the 2017 block on its own, on GPT-2's biased block (RoPE makes dbk non-zero: checked too).
    The Llama and Mixtral tests above check every entry with all switches on; here 6 random entries of each array
    (every array: each head's and each bias's slice has entries in it), to stay within seconds."""
    base = dict(vocab_size=7, block_size=8, n_layer=2, n_head=4, d_model=8)
    for change in (dict(norm="rmsnorm"), dict(positional="rope"), dict(ffn="swiglu", d_ff=12), dict(n_kv_head=1),
                   dict(tie_embeddings=False, bias=False), dict(embed_scale=3.0),
                   dict(embed_scale=2.0, positional="sinusoidal")):
        config = gpt.GPTConfig(**base, **change)
        params = perturbed(gpt.init_params(config, rng, dtype=np.float64), rng)
        ids, targets = rng.integers(0, 7, size=(2, 2, 6))
        _, grads = gpt.loss_and_grads(params, config, ids, targets)
        flat_p, flat_g = tree.flatten(params), tree.flatten(grads)
        if "bk" in params["blocks"][0]["attn"] and config.positional != "rope":
            for i in range(config.n_layer):               # no gradient at all without RoPE (see tests/test_gpt.py)
                assert np.abs(flat_g.pop(f"blocks.{i}.attn.bk")).max() < 1e-14
                flat_p.pop(f"blocks.{i}.attn.bk")
        def f():
            return float(cross_entropy.forward(gpt.forward(params, config, ids)[0], targets)[0])

        for name, x in flat_p.items():
            idx = rng.choice(x.size, size=min(6, x.size), replace=False)
            err = rel_error(flat_g[name].reshape(-1)[idx], numerical_grad(f, x, indices=idx))
            assert err < RTOL_FD, f"{change}: d/d{name} relative error {err:.2e}"


def test_rope_model_sees_only_relative_positions(rng):
    """Shifting every position by the same amount leaves a RoPE model's logits unchanged (to float64 round-off):
    the scores depend on n - m only, and nothing else in the model sees a position."""
    config = gpt.GPTConfig(vocab_size=11, block_size=32, n_layer=2, n_head=4, d_model=16, positional="rope",
                           norm="rmsnorm", n_kv_head=2)
    params = perturbed(gpt.init_params(config, rng, dtype=np.float64), rng)
    ids = rng.integers(0, 11, size=(2, 9))
    base, _ = gpt.forward(params, config, ids)
    shifted, _ = gpt.forward(params, config, ids, positions=np.arange(9) + 17)
    # angles up to 26 rad in float64: cos/sin exact to ~1e-15, through two layers ~1e-13 on logits of size ~5
    np.testing.assert_allclose(shifted, base, rtol=0, atol=1e-11)
    learned = gpt.GPTConfig(**dict(dataclasses.asdict(config), positional="learned"))
    p_learned = dict(params, wpe=gpt.init_params(learned, rng, np.float64)["wpe"] * 50)
    a, _ = gpt.forward(p_learned, learned, ids)
    b, _ = gpt.forward(p_learned, learned, ids, positions=np.arange(9) + 17)
    assert np.abs(a - b).max() > 1e-2                       # absolute positions: a shift changes everything


# ---------------------------------------------------------------------------------------------------------------
# Decoding with the KV cache: n_kv_head heads, rotated keys, exact against recomputation

ATOL = 1e-12        # as tests/inference/test_decoding.py: float64 round-off in a different grouping, ~1e-14


def _llama_tiny(seed=0, n_expert=0):
    config = gpt.GPTConfig(vocab_size=11, block_size=24, n_layer=2, n_head=4, d_model=16, positional="rope",
                           norm="rmsnorm", ffn="swiglu", d_ff=24, n_kv_head=2, bias=False, tie_embeddings=False,
                           n_expert=n_expert)
    rng = np.random.default_rng(seed)
    flat = tree.flatten(gpt.init_params(config, rng, dtype=np.float64))
    flat = {k: (1.0 if k.endswith("gamma") else 0.0) + rng.normal(0.0, 0.5, size=a.shape) for k, a in flat.items()}
    return tree.unflatten(flat), config


@pytest.mark.parametrize("n_expert", [0, 4])
def test_cached_decoding_equals_recomputation(n_expert, rng):
    params, config = _llama_tiny(n_expert=n_expert)
    B, T0 = 3, 5
    ids = rng.integers(0, config.vocab_size, size=(B, config.block_size))
    logits, cache = decoding.forward_cached(params, config, ids[:, :T0])
    for t in range(T0, config.block_size):
        logits, cache = decoding.forward_cached(params, config, ids[:, t:t + 1], cache)
        full, _ = gpt.forward(params, config, ids[:, :t + 1])
        # the cache holds n_kv_head = 2 heads per layer, not n_head = 4
        assert cache.k[0].shape == (B, config.n_kv_head, t + 1, config.d_k)
        np.testing.assert_allclose(logits[:, 0], full[:, -1], rtol=0, atol=ATOL)


def test_left_padded_rope_batch_equals_each_row_alone(rng):
    """Per-row positions with RoPE: a row's keys are rotated by its own positions, so padding shifts nothing."""
    params, config = _llama_tiny()
    prompts = [list(rng.integers(0, config.vocab_size, size=n)) for n in (1, 4, 9, 6)]
    ids, mask = decoding.left_pad(prompts, pad_id=7)
    logits, cache = decoding.forward_cached(params, config, ids, attention_mask=mask)
    seqs = [list(p) for p in prompts]
    for b, p in enumerate(prompts):
        full, _ = gpt.forward(params, config, np.array([p]))
        np.testing.assert_allclose(logits[b, mask[b]], full[0], rtol=0, atol=ATOL)
    for _ in range(6):
        nxt = rng.integers(0, config.vocab_size, size=(4, 1))
        logits, cache = decoding.forward_cached(params, config, nxt, cache)
        for b in range(4):
            seqs[b].append(int(nxt[b, 0]))
            full, _ = gpt.forward(params, config, np.array([seqs[b]]))
            np.testing.assert_allclose(logits[b, 0], full[0, -1], rtol=0, atol=ATOL)


def test_kv_cache_bytes_shrink_by_the_group_size(rng):
    params, config = _llama_tiny()
    params32 = tree.unflatten({k: v.astype(np.float32) for k, v in tree.flatten(params).items()})
    T = 10
    _, cache = decoding.forward_cached(params32, config, rng.integers(0, config.vocab_size, size=(1, T)))
    measured = sum(a.nbytes for a in cache.k + cache.v) / T
    assert measured == gpt.kv_bytes_per_token(config) == 2 * config.n_layer * config.n_kv_head * config.d_k * 4
    mha = dataclasses.replace(config, n_kv_head=config.n_head)
    assert gpt.kv_bytes_per_token(mha) / measured == config.n_head // config.n_kv_head


def test_grouped_attention_with_one_group_is_multi_head_attention(rng):
    """n_kv_head = n_head takes attention's own path; GQA with its K/V heads repeated gives the same logits."""
    config = gpt.GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=4, d_model=16, n_kv_head=2)
    params = perturbed(gpt.init_params(config, rng, dtype=np.float64), rng)
    mha = dataclasses.replace(config, n_kv_head=4)
    p_mha = tree.unflatten(dict(tree.flatten(params)))
    a = p_mha["blocks"][0]["attn"]
    for w in ("Wk", "Wv"):                                  # repeat each K/V head's columns for its 2 query heads
        a[w] = np.repeat(a[w].reshape(16, 2, 4), 2, axis=1).reshape(16, 16)
    for b in ("bk", "bv"):
        a[b] = np.repeat(a[b].reshape(2, 4), 2, axis=0).reshape(16)
    ids = rng.integers(0, 11, size=(2, 7))
    np.testing.assert_allclose(gpt.forward(p_mha, mha, ids)[0], gpt.forward(params, config, ids)[0],
                               rtol=0, atol=1e-13)


def test_mixture_of_experts_counts_active_parameters():
    config = gpt.GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=4, d_model=16, norm="rmsnorm",
                           positional="rope", ffn="swiglu", d_ff=12, n_expert=4, top_k=2)
    dense = dataclasses.replace(config, n_expert=0, d_ff=24)
    # 4 experts of width 12 with 2 active = one dense SwiGLU of width 24, plus the router (16 x 4 per layer)
    assert gpt.n_active_params(config) == gpt.n_active_params(dense) + 2 * 16 * 4
    params = gpt.init_params(config, np.random.default_rng(0))
    assert gpt.n_params(params) == gpt.n_active_params(config) + 2 * 3 * 2 * 16 * 12


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(n_kv_head=3), ValueError, "does not divide n_head"),
    (dict(norm="batchnorm"), ValueError, "norm"),
    (dict(ffn="geglu"), ValueError, "ffn"),
    (dict(positional="rope", n_head=8), ValueError, "must be even"),
    (dict(n_expert=4), ValueError, "needs ffn='swiglu'"),
    (dict(n_expert=2, ffn="swiglu", top_k=3), ValueError, "top_k"),
    (dict(rope_theta=0.0), ValueError, "rope_theta"),
    (dict(bias=1), TypeError, "bias"),
    (dict(aux_loss_coef=-1.0), ValueError, "aux_loss_coef"),
    (dict(embed_scale=0.0), ValueError, "embed_scale"),
])
def test_bad_config_raises(kwargs, error, match):
    with pytest.raises(error, match=match):
        gpt.GPTConfig(**dict(dict(vocab_size=11, block_size=8, n_layer=1, n_head=4, d_model=8), **kwargs))


def test_unsupported_hugging_face_configs_are_refused():
    cfg = transformers.LlamaConfig(**HF_SIZES).to_dict()
    llama3_scaling = {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}
    for change, match in ((dict(rope_parameters=llama3_scaling), "rope_type"),
                          (dict(head_dim=16), "head_dim"), (dict(attention_bias=True), "attention_bias"),
                          (dict(hidden_act="gelu"), "hidden_act"), (dict(model_type="gpt2"), "model_type")):
        with pytest.raises(ValueError, match=match):
            gpt.llama_config(dict(cfg, **change))
    with pytest.raises(ValueError, match="lacks 'lm_head.weight'"):
        sd = {k: v.numpy() for k, v in hf_model("llama").state_dict().items() if k != "lm_head.weight"}
        gpt.from_hf_llama(sd, cfg)


def test_old_mixtral_expert_names_are_read(rng):
    """Checkpoints written before transformers 5 name each expert's matrices w1 (gate), w3 (up), w2 (down)."""
    model = hf_model("mixtral")
    params, config = load("mixtral", model)
    old = {}
    for k, v in model.state_dict().items():
        v = v.numpy()
        if ".mlp.experts.gate_up_proj" in k:
            p = k.replace("mlp.experts.gate_up_proj", "block_sparse_moe.experts.{}.{}.weight")
            for e in range(4):
                old[p.format(e, "w1")], old[p.format(e, "w3")] = v[e, :40], v[e, 40:]
        elif ".mlp.experts.down_proj" in k:
            for e in range(4):
                old[k.replace("mlp.experts.down_proj", f"block_sparse_moe.experts.{e}.w2.weight")] = v[e]
        else:
            old[k.replace("mlp.gate.", "block_sparse_moe.gate.")] = v
    params_old, _ = gpt.from_hf_mixtral(old, model.config.to_dict())
    flat, flat_old = tree.flatten(params), tree.flatten(params_old)
    assert flat.keys() == flat_old.keys() and all(np.array_equal(flat[k], flat_old[k]) for k in flat)
