"""reference/models/gpt.py: the decoder-only LM against Hugging Face GPT-2, finite differences, a PyTorch training step,
and an overfit run. Budget: about 20 s on one core (most of it importing transformers).

The oracle is a randomly initialised ``transformers.GPT2LMHeadModel`` built offline from a small ``GPT2Config``.
GPT-2's MLP uses the tanh approximation of GELU (``activation_function="gelu_new"``) and LayerNorm eps 1e-5, so our
config uses ``activation="gelu_tanh"`` and ``ln_eps=1e-5``; with exact GELU the logits would differ by ~1e-4.
"""
import numpy as np
import pytest

from reference import tree
from reference.gradcheck import check_grads, numerical_grad, rel_error
from reference.models import gpt
from reference.ops import cross_entropy, positional
from reference.training import optim

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

HF_SIZES = dict(vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=4)


def hf_model(dtype, seed=0):
    """A random GPT-2 whose every parameter (biases and LayerNorm gains included) is perturbed away from its
    init, so that a gradient that ignored a bias or a gain would show."""
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(**HF_SIZES, activation_function="gelu_new", layer_norm_epsilon=1e-5,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
                                  attn_implementation="eager")
    model = transformers.GPT2LMHeadModel(cfg).to(dtype).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def numpy_state(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def hf_grads(model):
    """HF parameter gradients as numpy, keyed like ``to_hf_gpt2`` (the tied lm_head is wte)."""
    return {name: p.grad.numpy() for name, p in model.named_parameters() if not name.startswith("lm_head")}


# float64: the two models do the same arithmetic in a different order, so they agree to round-off: measured 2e-15
# (relative to each array's largest entry); 1e-12 leaves room and still catches any wrong term.
# float32: round-off is ~6e-8 per op, accumulated through two blocks, the softmax and the tied head: measured 8e-7;
# 1e-5 is a safe bound that a missing term (error ~1e-2 or more) cannot pass.
@pytest.mark.parametrize("np_dtype, torch_dtype, tol", [(np.float64, torch.float64, 1e-12),
                                                        (np.float32, torch.float32, 1e-5)])
def test_logits_and_grads_match_hf_gpt2(np_dtype, torch_dtype, tol, rng):
    model = hf_model(torch_dtype)
    params, config = gpt.from_hf_gpt2(numpy_state(model), n_head=HF_SIZES["n_head"])
    assert config == gpt.GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=4, d_model=32,
                                   positional="learned", activation="gelu_tanh", ln_eps=1e-5)
    assert gpt.n_params(params) == sum(p.numel() for p in model.parameters())
    B, T = 3, 11                       # T < block_size: rows T.. of wpe are unused and must get a zero gradient
    ids = rng.integers(0, config.vocab_size, size=(B, T))
    logits, cache = gpt.forward(params, config, ids)
    assert logits.dtype == np_dtype and logits.shape == (B, T, config.vocab_size)
    logits_t = model(torch.from_numpy(ids)).logits
    assert rel_error(logits, logits_t.detach().numpy()) < tol

    G = rng.standard_normal(logits.shape).astype(np_dtype)   # random upstream gradient: L = sum(G * logits)
    (logits_t * torch.from_numpy(G)).sum().backward()
    grads = gpt.backward(G, cache)
    ours = gpt.to_hf_gpt2(grads)
    theirs = hf_grads(model)
    assert set(ours) == set(theirs)
    for name, g in ours.items():
        assert g.dtype == np_dtype, name
        assert rel_error(g, theirs[name]) < tol, f"{name}: {rel_error(g, theirs[name]):.2e}"
    assert np.all(grads["wpe"][T:] == 0)


def test_hf_round_trip_and_tied_head():
    sd = numpy_state(hf_model(torch.float32))
    params, _ = gpt.from_hf_gpt2(sd, n_head=4)
    back = gpt.to_hf_gpt2(params)
    assert set(back) == set(sd) - {"lm_head.weight"}
    assert all(np.array_equal(back[k], sd[k]) for k in back)
    sd["lm_head.weight"] = sd["lm_head.weight"] + 1.0
    with pytest.raises(ValueError, match="lm_head.weight differs"):
        gpt.from_hf_gpt2(sd, n_head=4)
    with pytest.raises(ValueError, match="not divisible by n_head"):
        gpt.from_hf_gpt2(numpy_state(hf_model(torch.float32)), n_head=5)


ADAMW = dict(lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)


def torch_adamw(model):
    """torch.optim.AdamW with optim.decay_matrices' grouping: decay the matrices, not biases, gains or embeddings."""
    decay = {n for n, p in model.named_parameters() if p.ndim >= 2 and n.split(".")[1] not in ("wte", "wpe")}
    groups = [{"params": [p for n, p in model.named_parameters() if n in decay]},
              {"params": [p for n, p in model.named_parameters() if n not in decay], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=ADAMW["lr"], betas=ADAMW["betas"], eps=ADAMW["eps"],
                             weight_decay=ADAMW["weight_decay"])


# Three full training steps (forward, cross-entropy, backward, AdamW with weight decay on the matrices only) from
# the same initial parameters on the same batches. The parameters are compared after every step.
# float64: round-off only, measured 2e-15 (relative to each array's largest entry); bound 1e-12.
# float32: the gradients agree to ~1e-6 of each array's largest entry (test above), and Adam's first steps are about
# lr * g / (|g| + eps), i.e. about lr * sign(g). An entry whose gradient is below that round-off on both sides has no
# float32 sign: each side steps by up to lr in a direction set by its own rounding. The key bias bk is such an entry
# on every step (its true gradient is exactly 0, see the finite-difference test), and so, by chance, is one entry of
# wte in step 1 of this test (float64 gradient 1.2e-8, 9e-8 of the array's largest; float32 gives -2.0e-8 on our side
# and -1.1e-8 on torch's, so with eps = 1e-8 the updates are 0.67 lr and 0.53 lr: a difference of 0.14 lr = 1.4e-4,
# 4.5e-4 relative to the array). Those entries, with |g| below `unresolved` times the array's largest on both sides
# (10x the gradients' round-off: 1e-5 in float32, 1e-13 in float64), are held to what Adam allows, 2 lr per step
# apart; every other entry is compared with the bound `tol` (float32: measured 3.4e-6 relative, on one entry of c_fc;
# a wrong gradient term moves updates by ~lr, ~1e-2). Measured here: besides bk, at most 4 such entries per array
# (0.13 %) in float32, none in float64; more than 1 % would mean the gradients themselves went wrong.
@pytest.mark.parametrize("np_dtype, torch_dtype, tol, unresolved_below", [(np.float64, torch.float64, 1e-12, 1e-13),
                                                                          (np.float32, torch.float32, 1e-5, 1e-5)])
def test_training_steps_match_pytorch(np_dtype, torch_dtype, tol, unresolved_below, rng):
    model = hf_model(torch_dtype, seed=1)
    params, config = gpt.from_hf_gpt2(numpy_state(model), n_head=HF_SIZES["n_head"])
    model.train()                                 # dropout probabilities are 0: train mode changes nothing else
    opt_t = torch_adamw(model)
    state = optim.adamw_init(params)
    unresolved = {}                               # name -> entries whose update so far was set by round-off
    for step in range(3):
        ids = rng.integers(0, config.vocab_size, size=(4, 16))
        targets = rng.integers(0, config.vocab_size, size=(4, 16))
        loss, grads = gpt.loss_and_grads(params, config, ids, targets)
        optim.adamw_step(params, grads, state, **ADAMW, decay_mask=optim.decay_matrices)

        opt_t.zero_grad()
        logits = model(torch.from_numpy(ids)).logits
        loss_t = torch.nn.functional.cross_entropy(logits.reshape(-1, config.vocab_size),
                                                   torch.from_numpy(targets).reshape(-1))
        loss_t.backward()
        opt_t.step()

        assert abs(float(loss) - loss_t.item()) <= tol * abs(loss_t.item())
        theirs = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
        ours = gpt.to_hf_gpt2(params)
        for name, g in gpt.to_hf_gpt2(grads).items():
            g_t = hf_grads(model)[name]
            floor = unresolved_below * np.abs(g_t).max()
            unresolved[name] = unresolved.get(name, False) | ((np.abs(g) <= floor) & (np.abs(g_t) <= floor))
        for i in range(config.n_layer):                                     # bk: always round-off
            assert unresolved[f"transformer.h.{i}.attn.c_attn.bias"][config.d_model:2 * config.d_model].all()
        for name, p in ours.items():
            m = unresolved[name]
            others = np.delete(m, slice(config.d_model, 2 * config.d_model)) if name.endswith("c_attn.bias") else m
            assert others.mean() < 0.01, f"{name}: {others.mean():.1%} of the gradients are round-off"
            assert np.abs(p[m] - theirs[name][m]).max(initial=0) <= 2 * (step + 1) * ADAMW["lr"]
            err = rel_error(p[~m], theirs[name][~m])
            assert err < tol, f"step {step + 1}, {name}: {err:.2e}"


TINY = dict(vocab_size=11, block_size=6, n_layer=2, n_head=2, d_model=8)


def perturbed(params, rng, scale=0.3):
    """Move every parameter away from its init (gains 1, biases 0), so no gradient is checked at a special point."""
    flat = tree.flatten(params)
    return tree.unflatten({k: v + scale * rng.standard_normal(v.shape).astype(v.dtype) for k, v in flat.items()})


# All ~1,900 parameters of the tiny model are checked, not a sample: a forward pass costs about a millisecond,
# so the whole gradient is cheap, and no entry (a single row of wpe, one head's slice of Wq) can hide.
# Tolerance: RTOL_FD from reference/gradcheck.py (float64 central differences, h = 1e-6; see there).
def test_whole_model_loss_matches_finite_differences(rng):
    config = gpt.GPTConfig(**TINY)
    params = perturbed(gpt.init_params(config, rng, dtype=np.float64), rng)
    ids = rng.integers(0, config.vocab_size, size=(2, 5))
    targets = rng.integers(0, config.vocab_size, size=(2, 5))
    loss, grads = gpt.loss_and_grads(params, config, ids, targets)
    assert loss.dtype == np.float64 and loss.shape == ()

    def f():                                   # forward only: the loss, without the backward pass
        return float(cross_entropy.forward(gpt.forward(params, config, ids)[0], targets)[0])

    flat_p, flat_g = tree.flatten(params), tree.flatten(grads)
    # The key bias gets no gradient at all: q . (k + bk) = q . k + q . bk adds the same number to every score of a
    # query's row, and softmax ignores that. Its analytic gradient is round-off and its numerical one is noise,
    # so a relative error means nothing; both must be ~0 next to the other gradients (~1e-2).
    for i in range(config.n_layer):
        name = f"blocks.{i}.attn.bk"
        assert np.abs(flat_g.pop(name)).max() < 1e-14
        assert np.abs(numerical_grad(f, flat_p.pop(name))).max() < 1e-9
    check_grads(f, flat_p, flat_g)


def test_sinusoidal_model_is_learned_model_with_the_sinusoid_table(rng):
    """Fixed sinusoidal positions are a learned table frozen at the sinusoids: same logits, same gradients for
    every other parameter (bit for bit: the same operations run in the same order)."""
    config_s = gpt.GPTConfig(**TINY, positional="sinusoidal")
    config_l = gpt.GPTConfig(**TINY, positional="learned")
    params_s = perturbed(gpt.init_params(config_s, rng, dtype=np.float64), rng)
    assert "wpe" not in params_s
    params_l = dict(params_s, wpe=positional.sinusoidal(config_s.block_size, config_s.d_model))
    ids = rng.integers(0, config_s.vocab_size, size=(2, 5))
    loss_s, grads_s = gpt.loss_and_grads(params_s, config_s, ids, ids)
    loss_l, grads_l = gpt.loss_and_grads(params_l, config_l, ids, ids)
    assert loss_s == loss_l
    grads_l.pop("wpe")
    flat_s, flat_l = tree.flatten(grads_s), tree.flatten(grads_l)
    assert flat_s.keys() == flat_l.keys()
    assert all(np.array_equal(flat_s[k], flat_l[k]) for k in flat_s)


def test_float32_in_float32_out(rng):
    config = gpt.GPTConfig(**TINY)
    params = gpt.init_params(config, rng)
    ids = rng.integers(0, config.vocab_size, size=(2, 6))
    loss, grads = gpt.loss_and_grads(params, config, ids, ids)
    assert loss.dtype == np.float32
    flat_g, flat_p = tree.flatten(grads), tree.flatten(params)
    assert flat_g.keys() == flat_p.keys()
    assert all(flat_g[k].dtype == np.float32 and flat_g[k].shape == flat_p[k].shape for k in flat_p)


def test_init_params_scales(rng):
    config = gpt.GPTConfig(vocab_size=500, block_size=64, n_layer=8, n_head=4, d_model=128)
    params = gpt.init_params(config, rng)
    blk = params["blocks"][3]
    # sample std of ~16k-65k normal draws is within 2% of the true std with overwhelming probability
    assert abs(params["wte"].std() / 0.02 - 1) < 0.02
    assert abs(blk["attn"]["Wq"].std() / 0.02 - 1) < 0.02
    assert abs(blk["ffn"]["W2"].std() / (0.02 / np.sqrt(16)) - 1) < 0.02
    assert abs(blk["attn"]["Wo"].std() / (0.02 / np.sqrt(16)) - 1) < 0.02
    assert np.all(blk["ln1"]["gamma"] == 1) and np.all(blk["ffn"]["b1"] == 0)
    C, V, L = 128, 500, 8
    assert gpt.n_params(params) == V * C + 64 * C + L * (12 * C * C + 13 * C) + 2 * C
    assert tree.unflatten(tree.flatten(params)).keys() == params.keys()


def test_overfits_one_batch(rng):
    """A tiny model memorises one fixed batch: the loss goes from ln(V) ~ 2.8 to near zero under Adam.
    The sequences are random, so nothing but memorisation can drive the loss down."""
    config = gpt.GPTConfig(vocab_size=16, block_size=16, n_layer=2, n_head=4, d_model=32)
    params = gpt.init_params(config, rng, dtype=np.float64)
    state = optim.adam_init(params)
    ids = rng.integers(0, 16, size=(4, 16))
    targets = np.roll(ids, -1, axis=1)
    losses = []
    for _ in range(150):
        loss, grads = gpt.loss_and_grads(params, config, ids, targets)
        losses.append(float(loss))
        optim.adam_step(params, grads, state, lr=1e-2)
    assert losses[0] > 2.5
    # 0.05 nats per token: the model puts ~95% probability on every memorised next token
    assert losses[-1] < 0.05, losses[-10:]


@pytest.mark.parametrize("kwargs, match", [
    (dict(TINY, d_model=9), "not divisible by n_head"),
    (dict(TINY, n_layer=0), "n_layer: expected a positive integer"),
    (dict(TINY, positional="rotary"), "positional"),
    (dict(TINY, activation="swish"), "activation"),
    (dict(TINY, ln_eps=0.0), "ln_eps"),
])
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gpt.GPTConfig(**kwargs)


def test_bad_inputs_raise(rng):
    config = gpt.GPTConfig(**TINY)
    params = gpt.init_params(config, rng)
    with pytest.raises(ValueError, match="exceeds the model's block_size=6"):
        gpt.forward(params, config, np.zeros((1, 7), dtype=np.int64))
    with pytest.raises(ValueError, match=r"token ids in \[0, 11\)"):
        gpt.forward(params, config, np.full((1, 3), 11))
    with pytest.raises(TypeError, match="integer"):
        gpt.forward(params, config, np.zeros((1, 3)))
    with pytest.raises(ValueError, match="expected shape"):
        gpt.forward(params, gpt.GPTConfig(**dict(TINY, d_model=10)), np.zeros((1, 3), dtype=np.int64))
    params["blocks"][0]["ffn"]["b1"] = params["blocks"][0]["ffn"]["b1"].astype(np.float64)
    with pytest.raises(TypeError, match="expected dtype float32"):
        gpt.forward(params, config, np.zeros((1, 3), dtype=np.int64))
