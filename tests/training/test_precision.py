"""Mixed precision (reference/training/precision.py): bf16 rounding bit for bit against torch, fp16 and bf16
gradients against float32, why fp16 needs a loss scale, and the dynamic loss scaler's events in a training run."""
import json

import numpy as np
import pytest
import torch

from reference import train, tree
from reference.models import gpt
from reference.training import checkpoint, optim, precision

CONFIG = gpt.GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=4, d_model=32)


def _bits(u32):
    return np.asarray(u32, dtype=np.uint32).view(np.float32)


def test_to_bf16_equals_torch_bit_for_bit(rng):
    # random bit patterns cover every exponent (normals, subnormals, inf, NaN), plus the hard cases by hand:
    # exact ties (round to even, both ways), the largest float32 (rounds up to inf), the smallest subnormal, -0
    random = rng.integers(0, 2 ** 32, size=200_000, dtype=np.uint64).astype(np.uint32)
    cases = np.array([0x3F808000, 0x3F818000, 0x3F808001, 0x3F807FFF, 0x7F7FFFFF, 0x7F7F7FFF, 0x7F7F8000,
                      0x00000001, 0x00008000, 0x00018000, 0x80000000, 0x7F800000, 0xFF800000, 0xFF7FFFFF],
                     dtype=np.uint32)
    x = _bits(np.concatenate([cases, random]))
    ours = precision.to_bf16(x).view(np.uint32)
    theirs = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    finite_or_inf = ~np.isnan(x)
    # every non-NaN input: the same 16 bits, and the low 16 bits of ours are zero
    assert np.array_equal(ours[finite_or_inf] >> 16, theirs[finite_or_inf])
    assert not (ours & 0xFFFF).any()
    # NaN stays NaN (torch's payload differs by build: 0x7FC0 in c10's scalar code, 0xFFFF here), sign kept
    assert np.isnan(ours.view(np.float32)[~finite_or_inf]).all()
    assert np.array_equal(np.signbit(ours.view(np.float32)), np.signbit(x))


def test_to_bf16_is_idempotent_and_keeps_shape():
    x = np.linspace(-3, 3, 24, dtype=np.float32).reshape(2, 3, 4)[:, ::2]     # a strided view
    y = precision.to_bf16(x)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.array_equal(precision.to_bf16(y), y)
    assert np.abs(y - x).max() <= 2.0 ** -8 * np.abs(x).max()           # half an ulp of bf16 (8 bits) at most


def test_to_bf16_refuses_other_dtypes():
    with pytest.raises(TypeError, match="expected a float32 numpy.ndarray"):
        precision.to_bf16(np.ones(3))


def _grads(precision_name, scale, B):
    """float32 and low-precision loss and gradients of the same (seeded) batch of B rows."""
    params = gpt.init_params(CONFIG, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    ids, targets = (rng.integers(0, CONFIG.vocab_size, (B, CONFIG.block_size)) for _ in range(2))
    loss32, g32 = gpt.loss_and_grads(params, CONFIG, ids, targets)
    loss, g = precision.loss_and_grads(params, CONFIG, ids, targets, precision_name, scale)
    return float(loss32), tree.flatten(g32), loss, tree.flatten(g)


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("name, scale", [("fp16", 1024.0), ("bf16", 1.0)])
def test_low_precision_gradients_are_close_to_float32(name, scale):
    loss32, g32, loss, g = _grads(name, scale, 8)
    assert all(a.dtype == np.float32 for a in g.values())                 # float32 for the float32 masters
    # the loss is a float32 mean of 16-bit logits: a few unit roundoffs of fp16 (4.9e-4) or bf16 (3.9e-3) per
    # logit, averaged over 256 positions, move it far less than that
    assert loss == pytest.approx(loss32, rel=1e-4)
    # whole-model gradients: measured 1.6e-3 (fp16) and 2.7e-3 (bf16) relative error; a few times the unit roundoff
    # of fp16, under that of bf16. 1e-2 passes both and catches a wrong scale (off by S) or a missing cast
    num = np.sqrt(sum(np.sum((g[k] - g32[k]) ** 2) for k in g))
    den = np.sqrt(sum(np.sum(g32[k] ** 2) for k in g))
    assert num / den < 1e-2
    if name == "bf16":
        assert not any((a.view(np.uint32) & 0xFFFF).any() for a in g.values())   # every gradient a bf16 value


def test_fp16_without_a_loss_scale_loses_small_gradients():
    # B T = 512 positions: dL/dlogit ~ 1/(B T V) = 3.0e-5, below fp16's smallest normal (6.1e-5), where it keeps
    # fewer significant bits or flushes to zero. The query projections' gradients, small at initialisation,
    # suffer most
    _, g32, _, unscaled = _grads("fp16", 1.0, 16)
    _, _, _, scaled = _grads("fp16", 1024.0, 16)
    name = "blocks.1.attn.Wq"
    # measured: 6.3 % error unscaled, 0.15 % scaled (fp16 arithmetic); zeros where float32 has none
    assert _rel(unscaled[name], g32[name]) > 0.03
    assert _rel(scaled[name], g32[name]) < 0.01
    assert sum(int(((unscaled[k] == 0) & (g32[k] != 0)).sum()) for k in g32) > 0


def test_fp16_overflow_gives_non_finite_gradients_and_bf16_takes_no_scale():
    *_, g = _grads("fp16", 2.0 ** 40, 8)                               # S dL/dlogits alone overflows fp16
    assert not precision.all_finite(tree.unflatten(g))
    with pytest.raises(ValueError, match="loss scaling is for fp16; bf16 takes scale 1"):
        _grads("bf16", 2.0, 8)
    with pytest.raises(ValueError, match="expected one of"):
        _grads("fp8", 1.0, 8)


def test_scaler_halves_on_overflow_and_doubles_after_a_run_of_good_steps():
    s = precision.scaler_init(scale=8.0, growth_interval=3)
    assert precision.scaler_update(s, finite=False) == "overflow: scale 8 -> 4, step skipped"
    assert [precision.scaler_update(s, True) for _ in range(3)] == [None, None, "3 good steps: scale 4 -> 8"]
    assert precision.scaler_update(s, True) is None and s == {"scale": 8.0, "good_steps": 1, "growth_interval": 3}
    precision.scaler_update(s, False)                                      # an overflow resets the count
    assert s["good_steps"] == 0 and s["scale"] == 4.0


def test_an_overflow_skips_the_update(rng):
    run = train.make_run(train.parse_args(["--config", "tiny", "--precision", "fp16"]))
    params = gpt.init_params(CONFIG, np.random.default_rng(0))
    before = {k: v.copy() for k, v in tree.flatten(params).items()}
    state = optim.adamw_init(params)
    ids = rng.integers(0, CONFIG.vocab_size, (8, CONFIG.block_size))
    scaler = precision.scaler_init(scale=2.0 ** 40)
    loss, lr, grad_norm, event = train.train_step(params, state, CONFIG, run, ids, ids, 1, scaler)
    assert event.startswith("overflow") and not np.isfinite(grad_norm) and scaler["scale"] == 2.0 ** 39
    assert state["step"] == 0                                            # AdamW did not step
    assert all(np.array_equal(before[k], v) for k, v in tree.flatten(params).items())


def test_fp16_run_logs_scale_events_and_resumes_exactly(tmp_path, small_corpus, monkeypatch):
    # 2^19 times the tiny model's gradients overflows fp16: the run skips steps, halving S, until the gradients
    # fit, then doubles S after 3 good steps (measured: 2 skips, growth at step 5, an overflow again at step 6)
    monkeypatch.setattr(precision, "INIT_SCALE", 2.0 ** 19)
    monkeypatch.setattr(precision, "GROWTH_INTERVAL", 3)
    flags = ["--precision", "fp16"]
    train.main(tiny_args(tmp_path, "whole", *flags))
    train.main(tiny_args(tmp_path, "split", *flags, "--stop-at", "5"))
    train.main(tiny_args(tmp_path, "resumed", "--resume", str(tmp_path / "split" / "checkpoint.npz")))
    log = json.loads((tmp_path / "whole" / "log.json").read_text())
    steps, events = zip(*log["loss_scale"])
    assert events[0] == "overflow: scale 524288 -> 262144, step skipped" and steps[0] == 1
    grow = next(i for i, e in enumerate(events) if e.startswith("3 good steps"))
    assert steps[grow] == steps[grow - 1] + 3                        # 3 good steps after the last overflow
    a, b = (checkpoint.load(tmp_path / d / "checkpoint.npz") for d in ("whole", "resumed"))
    assert a["loss_scale"] == b["loss_scale"] and a["history"] == b["history"]
    assert all(np.array_equal(x, y) for x, y in zip(tree.flatten(a["params"]).values(),
                                                     tree.flatten(b["params"]).values()))


from test_train import corpus_head, small_corpus, tiny_args  # noqa: E402,F401  (fixtures and flags shared)
