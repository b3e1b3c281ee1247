"""reference/compression/distill.py: the distillation loss against finite differences and torch's ``F.kl_div``, its special
cases and stability, bad inputs, and a quick distillation run. Budget: about 10 s on one core.

torch's convention. ``F.kl_div(input, target, log_target=True)`` takes the *student's* log-probabilities as
``input`` and the teacher's as ``target`` and sums ``exp(target) * (target - input)`` elementwise, i.e.
KL(teacher || student). ``reduction="batchmean"`` divides that sum by ``input.size(0)``: on (B, T, V) logits that is
B, not the B*T positions we average over, so the oracle flattens the logits to (N, V) first, where batchmean
divides by N. (``reduction="mean"`` would divide by N*V, the wrong thing, which torch warns about.)
"""
import numpy as np
import pytest

from reference.compression import distill
from reference.gradcheck import check_grads, rel_error
from reference.models import gpt
from reference.ops import cross_entropy
from reference.training import data, optim

torch = pytest.importorskip("torch")
F = torch.nn.functional


def logits_and_targets(rng, shape, V, dtype=np.float64, scale=2.0):
    zs = (scale * rng.standard_normal(shape + (V,))).astype(dtype)
    zt = (scale * rng.standard_normal(shape + (V,))).astype(dtype)
    y = rng.integers(0, V, size=shape)
    return zs, zt, y


def torch_loss(zs, zt, y, T, alpha):
    """The oracle: T^2 * F.kl_div(..., log_target=True, reduction="batchmean") on (N, V) + alpha * F.cross_entropy."""
    V = zs.shape[-1]
    s = torch.tensor(zs.reshape(-1, V), requires_grad=True)
    t = torch.tensor(zt.reshape(-1, V))
    kl = F.kl_div(F.log_softmax(s / T, dim=-1), F.log_softmax(t / T, dim=-1), log_target=True, reduction="batchmean")
    loss = T * T * kl + alpha * F.cross_entropy(s, torch.tensor(y.reshape(-1)))
    loss.backward()
    return loss.detach().numpy(), s.grad.numpy().reshape(zs.shape)


@pytest.mark.parametrize("shape,V", [((2, 3), 5), ((7,), 4), ((1, 1), 2)])
@pytest.mark.parametrize("T,alpha", [(1.0, 0.0), (2.0, 0.5), (0.5, 1.0), (4.0, 0.0)])
def test_backward_matches_finite_differences(shape, V, T, alpha, rng):
    # float64 central differences with a random upstream gradient g: f = g * L. RTOL_FD (gradcheck.py) = 1e-6.
    zs, zt, y = logits_and_targets(rng, shape, V)
    g = float(rng.standard_normal())
    _, cache = distill.forward(zs, zt, y, T, alpha)
    dzs = distill.backward(g, cache)
    check_grads(lambda: g * float(distill.forward(zs, zt, y, T, alpha)[0]), {"zs": zs}, {"zs": dzs})


@pytest.mark.parametrize("T,alpha", [(1.0, 0.0), (2.0, 0.5), (0.7, 2.0), (8.0, 0.1)])
def test_matches_torch_float64(T, alpha, rng):
    # float64, same formula, different summation order: agreement to ~1e-15 relative; 1e-12 leaves room.
    zs, zt, y = logits_and_targets(rng, (3, 5), 11)
    loss, cache = distill.forward(zs, zt, y, T, alpha)
    want_loss, want_grad = torch_loss(zs, zt, y, T, alpha)
    assert loss.dtype == np.float64 and loss.shape == ()
    assert rel_error(loss, want_loss) < 1e-12
    assert rel_error(distill.backward(1.0, cache), want_grad) < 1e-12


def test_batchmean_on_3d_logits_divides_by_batch_only(rng):
    # The trap the module docstring's oracle avoids: on (B, T, V) logits "batchmean" divides by B, so it is T times
    # our mean over the B*T positions. float64 round-off only: 1e-12.
    zs, zt, _ = logits_and_targets(rng, (2, 5), 7)
    loss, _ = distill.forward(zs, zt, None, 1.0, 0.0)
    kl_3d = F.kl_div(F.log_softmax(torch.tensor(zs), -1), F.log_softmax(torch.tensor(zt), -1), log_target=True,
                     reduction="batchmean").item()
    assert rel_error(kl_3d, 5 * loss) < 1e-12


def test_matches_torch_float32(rng):
    # float32: each side rounds at ~6e-8 relative; the log-softmaxes, the products and a sum over V = 50 entries and
    # 24 positions accumulate to a few 1e-7, so 1e-5 is a loose-enough bound that still catches a wrong term
    # (a missing T gives an error of order 1).
    zs, zt, y = logits_and_targets(rng, (4, 6), 50, dtype=np.float32)
    loss, cache = distill.forward(zs, zt, y, 3.0, 0.5)
    dz = distill.backward(np.float32(1.0), cache)
    assert loss.dtype == np.float32 and dz.dtype == np.float32
    want_loss, want_grad = torch_loss(zs, zt, y, 3.0, 0.5)
    assert rel_error(loss, want_loss) < 1e-5
    assert rel_error(dz, want_grad) < 1e-5


def test_T1_alpha0_is_the_mean_kl(rng):
    # With T = 1 and alpha = 0 the loss is the mean over positions of sum_v p_t log(p_t / p_s), written out naively
    # here (fine at these small logits); the gradient is (p_s - p_t) / N.
    zs, zt, _ = logits_and_targets(rng, (2, 4), 6)
    p_s = np.exp(zs) / np.exp(zs).sum(-1, keepdims=True)
    p_t = np.exp(zt) / np.exp(zt).sum(-1, keepdims=True)
    loss, cache = distill.forward(zs, zt, None, 1.0, 0.0)
    # float64 round-off only: 1e-13.
    assert rel_error(loss, (p_t * np.log(p_t / p_s)).sum(-1).mean()) < 1e-13
    assert rel_error(distill.backward(1.0, cache), (p_s - p_t) / 8) < 1e-13


def test_equal_logits_give_zero_kl_and_pure_ce(rng):
    zs, _, y = logits_and_targets(rng, (3,), 7)
    loss, cache = distill.forward(zs, zs.copy(), y, 2.5, 0.3)
    ce, ce_cache = cross_entropy.forward(zs, y)
    assert rel_error(loss, 0.3 * ce) < 1e-13                                        # float64 round-off
    assert rel_error(distill.backward(1.0, cache), 0.3 * cross_entropy.backward(1.0, ce_cache)) < 1e-13


def test_large_logits_are_stable(rng):
    # Logits of magnitude 1e4 overflow a naive exp in float32 (exp(89) = inf). The loss, computed from
    # log-softmaxes, must be finite and agree with float64: float32 holds 1e4-scale differences to ~1e-3 absolute
    # out of a loss of ~1e4, so 1e-5 relative.
    zs, zt, y = logits_and_targets(rng, (3, 4), 9, dtype=np.float64, scale=1e4)
    l64, c64 = distill.forward(zs, zt, y, 2.0, 0.5)
    l32, c32 = distill.forward(zs.astype(np.float32), zt.astype(np.float32), y, 2.0, 0.5)
    d32 = distill.backward(1.0, c32)
    assert np.isfinite(l32) and np.isfinite(d32).all()
    assert rel_error(l32, l64) < 1e-5
    assert rel_error(d32, distill.backward(1.0, c64)) < 1e-5


def test_empty_batch_gives_zero(rng):
    zs = np.zeros((0, 5))
    loss, cache = distill.forward(zs, zs, np.zeros((0,), dtype=np.int64), 2.0, 0.5)
    assert loss == 0 and distill.backward(1.0, cache).shape == (0, 5)


def test_bad_inputs(rng):
    zs, zt, y = logits_and_targets(rng, (2, 3), 5)
    for T in (0.0, -1.0, float("nan"), float("inf"), True, "2"):
        with pytest.raises(ValueError, match="T: expected a finite number > 0"):
            distill.forward(zs, zt, y, T, 0.5)
    with pytest.raises(ValueError, match="alpha: expected a finite number >= 0"):
        distill.forward(zs, zt, y, 2.0, -0.1)
    with pytest.raises(ValueError, match=r"teacher_logits: expected the shape of student_logits \(2, 3, 5\), got "
                                         r"\(2, 3, 6\)"):
        distill.forward(zs, np.zeros((2, 3, 6)), y, 2.0, 0.5)
    with pytest.raises(TypeError, match="teacher_logits: expected dtype float64"):
        distill.forward(zs, zt.astype(np.float32), y, 2.0, 0.5)
    with pytest.raises(ValueError, match=r"targets: expected shape \(2, 3\), got \(3, 2\)"):
        distill.forward(zs, zt, y.T, 2.0, 0.5)
    with pytest.raises(ValueError, match="targets: required when alpha > 0"):
        distill.forward(zs, zt, None, 2.0, 0.5)
    with pytest.raises(TypeError, match="student_logits: expected a numpy.ndarray"):
        distill.forward(zs.tolist(), zt, y, 2.0, 0.5)
    with pytest.raises(TypeError, match="targets: expected an integer"):
        distill.forward(zs, zt, y.astype(float), 2.0, 0.5)
    _, cache = distill.forward(zs, zt, y, 2.0, 0.5)
    with pytest.raises(ValueError, match=r"dloss: expected shape \(\)"):
        distill.backward(np.ones(2), cache)


# ---------------------------------------------------------------------------------------------------------------
# A quick distillation run
# ---------------------------------------------------------------------------------------------------------------

def test_distill_quick(rng):
    # A "language" with structure: a random walk over 8 tokens (next = current +- 1, mod 8). The teacher trains on
    # it with cross-entropy for a few steps; then a 4x smaller student distils from it. The distilled student's
    # validation loss must fall well below its start (ln 8 = 2.08 for a uniform guess).
    V = 8
    text = np.cumsum(rng.choice([-1, 1], size=4000)) % V
    train, val = text[:3600], text[3600:]
    t_cfg = gpt.GPTConfig(vocab_size=V, block_size=16, n_layer=2, n_head=2, d_model=32)
    s_cfg = gpt.GPTConfig(vocab_size=V, block_size=16, n_layer=2, n_head=2, d_model=16)
    teacher = gpt.init_params(t_cfg, rng)
    state = optim.adamw_init(teacher)
    for _ in range(40):
        x, y = data.get_batch(train, 8, t_cfg.block_size, rng)
        optim.adamw_step(teacher, gpt.loss_and_grads(teacher, t_cfg, x, y)[1], state, 1e-2)
    out = distill.distill(teacher, t_cfg, s_cfg, train, steps=40, val_data=val, T=2.0, alpha=0.5, lr=1e-2,
                          eval_every=20)
    curves, table = out["curves"], {row["model"]: row for row in out["table"]}
    assert [s for s, _ in curves["distilled"]] == [0, 20, 40] == [s for s, _ in curves["scratch"]]
    assert curves["distilled"][0] == curves["scratch"][0]                          # same init, same windows
    assert curves["distilled"][-1][1] < curves["distilled"][0][1] - 0.3
    assert table["distilled"]["params"] == table["scratch"]["params"] == gpt.n_params(out["students"]["scratch"])
    # non-embedding parameters: 12 C^2 per layer, so halving C divides them by 4
    assert 3.0 < (table["teacher"]["params"] / table["distilled"]["params"]) < 4.0
    assert all(row["tokens_per_s"] > 0 and np.isfinite(row["val_loss"]) for row in out["table"])


def test_distill_bad_configs(rng):
    t_cfg = gpt.GPTConfig(vocab_size=8, block_size=8, n_layer=1, n_head=1, d_model=8)
    params = gpt.init_params(t_cfg, rng)
    train = np.arange(50) % 8
    with pytest.raises(ValueError, match="vocab_size=9 differs from the teacher's 8"):
        distill.distill(params, t_cfg, gpt.GPTConfig(9, 8, 1, 1, 8), train, steps=1)
    with pytest.raises(ValueError, match="block_size=16 exceeds the teacher's 8"):
        distill.distill(params, t_cfg, gpt.GPTConfig(8, 16, 1, 1, 8), train, steps=1)
    with pytest.raises(ValueError, match="steps: expected a positive integer"):
        distill.distill(params, t_cfg, t_cfg, train, steps=0)


def test_window_stride_caches_the_teacher_once_per_window(rng, monkeypatch):
    # a small training text cut into windows at multiples of the stride: the teacher runs on each window at most
    # once, however many steps revisit it
    V = 8
    t_cfg = gpt.GPTConfig(vocab_size=V, block_size=8, n_layer=1, n_head=2, d_model=16)
    s_cfg = gpt.GPTConfig(vocab_size=V, block_size=8, n_layer=1, n_head=2, d_model=8)
    teacher = gpt.init_params(t_cfg, rng)
    train = rng.integers(0, V, size=8 * 5 + 1)                      # exactly 5 windows at stride 8
    rows = []
    real_forward = distill.gpt.forward

    def counting_forward(params, config, ids):
        if params is teacher:
            rows.extend(map(tuple, ids))
        return real_forward(params, config, ids)

    monkeypatch.setattr(distill.gpt, "forward", counting_forward)
    val = rng.integers(0, V, size=200)                               # the teacher's validation runs elsewhere
    distill.distill(teacher, t_cfg, s_cfg, train, steps=30, val_data=val, batch_size=4, eval_every=30,
                    window_stride=8)
    training_rows = [r for r in rows if any(np.array_equal(r, train[a:a + 8]) for a in range(0, 40, 8))]
    assert len(training_rows) == len(set(training_rows)) <= 5


def test_window_stride_with_one_window_equals_the_uncached_path(rng):
    # with a single possible window both paths draw the same batches (always window 0) from the same generator
    # calls, so caching the teacher's logits must change nothing
    V = 8
    t_cfg = gpt.GPTConfig(vocab_size=V, block_size=8, n_layer=1, n_head=2, d_model=16)
    s_cfg = gpt.GPTConfig(vocab_size=V, block_size=8, n_layer=1, n_head=2, d_model=8)
    teacher = gpt.init_params(t_cfg, rng)
    train = rng.integers(0, V, size=9)
    a = distill.distill(teacher, t_cfg, s_cfg, train, steps=5, batch_size=2, eval_every=5)
    b = distill.distill(teacher, t_cfg, s_cfg, train, steps=5, batch_size=2, eval_every=5, window_stride=8)
    for name in ("distilled", "scratch"):
        fa, fb = distill.tree.flatten(a["students"][name]), distill.tree.flatten(b["students"][name])
        assert all(np.array_equal(fa[k], fb[k]) for k in fa)
    with pytest.raises(ValueError, match="window_stride: expected an int >= 1"):
        distill.distill(teacher, t_cfg, s_cfg, train, steps=1, window_stride=0)
