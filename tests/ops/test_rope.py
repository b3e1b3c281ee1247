"""reference/ops/rope.py against finite differences, Hugging Face's apply_rotary_pos_emb and LlamaRotaryEmbedding,
the paper's interleaved layout, and the relative-position property."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from reference.gradcheck import check_grads, rel_error
from reference.ops import rope

# float64 against Hugging Face's formula fed our float64 cos/sin: each output is x_a cos -/+ x_b sin on both sides,
# two roundings; 1e-14 relative to the largest entry is ~50 ulps, and a wrong sign or pair errs by O(1).
TOL64 = 1e-14
# float32: products of float32 values and float32 cos/sin, a couple of roundings (6e-8 each) per output.
TOL32 = 1e-6


def hf_tables(cos, sin):
    """Our (..., d/2) tables in Hugging Face's (..., d) form: each angle twice, once per half (torch.cat((f, f)))."""
    return (torch.from_numpy(np.concatenate([cos, cos], axis=-1)), torch.from_numpy(np.concatenate([sin, sin], axis=-1)))


def hf_rope(q, k, cos, sin, dq, dk):
    """apply_rotary_pos_emb on (B, H, T, d) q and k with (T, d/2) tables, and its gradients by autograd."""
    qt, kt = torch.tensor(q, requires_grad=True), torch.tensor(k, requires_grad=True)
    c, s = hf_tables(cos, sin)
    yq, yk = apply_rotary_pos_emb(qt, kt, c[None], s[None])   # unsqueeze_dim=1 puts the head axis in
    torch.autograd.backward((yq, yk), (torch.from_numpy(dq), torch.from_numpy(dk)))
    return yq.detach().numpy(), yk.detach().numpy(), qt.grad.numpy(), kt.grad.numpy()


@pytest.mark.parametrize("layout", rope.LAYOUTS)
@pytest.mark.parametrize("shape, positions", [((2, 3, 4, 6), np.arange(4)), ((1, 2, 5, 2), np.arange(7, 12)),
                                              ((2, 1, 3, 8), np.array([[[4, 0, 9]], [[1, 1, 2]]]))])
def test_rope_matches_finite_differences(shape, positions, layout, rng):
    x = rng.standard_normal(shape)
    dy = rng.standard_normal(shape)

    def loss():
        return float(np.sum(dy * rope.forward(x, positions, theta=100.0, layout=layout)[0]))

    _, cache = rope.forward(x, positions, theta=100.0, layout=layout)
    check_grads(loss, {"x": x}, {"x": rope.backward(dy, cache)})


@pytest.mark.parametrize("n_head, n_kv_head", [(4, 4), (4, 2), (3, 1)])
def test_rope_matches_hugging_face_apply_rotary_pos_emb(n_head, n_kv_head, rng):
    B, T, d, t0 = 2, 5, 8, 3                                 # positions t0 .. t0 + T - 1, as after a KV cache
    q = rng.standard_normal((B, n_head, T, d))
    k = rng.standard_normal((B, n_kv_head, T, d))
    dq, dk = rng.standard_normal(q.shape), rng.standard_normal(k.shape)
    pos = t0 + np.arange(T)
    yq, cq = rope.forward(q, pos, theta=500000.0)
    yk, ck = rope.forward(k, pos, theta=500000.0)
    ours = (yq, yk, rope.backward(dq, cq), rope.backward(dk, ck))
    for a, b in zip(ours, hf_rope(q, k, cq.cos, cq.sin, dq, dk)):
        assert rel_error(a, b) < TOL64


def test_rope_float32_matches_the_hugging_face_pipeline(rng):
    # LlamaRotaryEmbedding computes its angles in float32; at T = 64 they are off by at most 64 * 2^-24 ~ 4e-6 rad,
    # which moves an O(1) output by as much: 2e-5 holds it, and a wrong frequency or layout errs by O(1).
    B, H, T, d, theta = 2, 3, 64, 16, 500000.0
    config = LlamaConfig(hidden_size=H * d, num_attention_heads=H, rope_theta=theta)
    q = rng.standard_normal((B, H, T, d)).astype(np.float32)
    k = rng.standard_normal((B, H, T, d)).astype(np.float32)
    cos, sin = LlamaRotaryEmbedding(config)(torch.from_numpy(q), torch.arange(T)[None])
    yq, yk = apply_rotary_pos_emb(torch.from_numpy(q), torch.from_numpy(k), cos, sin)
    for x, y in ((q, yq), (k, yk)):
        ours, _ = rope.forward(x, np.arange(T), theta=theta)
        assert ours.dtype == np.float32
        assert rel_error(ours, y.numpy()) < 2e-5


def test_rope_tables_against_hugging_face_float32_angles():
    # The module docstring's claim: below position 4096 Hugging Face's float32 cos/sin differ from the float64 angles'
    # by up to 1.5e-4 (and by more than float32 rounding, 6e-8, so the difference is its angles, not its cosines).
    d, theta, T = 64, 10000.0, 4096
    config = LlamaConfig(hidden_size=4 * d, num_attention_heads=4, rope_theta=theta)
    cos, sin = LlamaRotaryEmbedding(config)(torch.zeros(1), torch.arange(T)[None])
    a = rope.angles(np.arange(T), d, theta)
    diff = max(np.abs(cos[0, :, :d // 2].double().numpy() - np.cos(a)).max(),
               np.abs(sin[0, :, :d // 2].double().numpy() - np.sin(a)).max())
    assert 1e-5 < diff < 2e-4


def test_rope_interleaved_layout_is_a_permutation_of_rotate_half(rng):
    d = 10
    x = rng.standard_normal((2, 3, 7, d))
    pos = np.arange(7)
    p = rope.interleave_permutation(d)
    assert p.tolist() == [0, 5, 1, 6, 2, 7, 3, 8, 4, 9]
    half, _ = rope.forward(x, pos, layout="half")
    inter, _ = rope.forward(x[..., p], pos, layout="interleaved")
    np.testing.assert_array_equal(inter, half[..., p])       # exactly: the same products in the same order
    assert np.abs(rope.forward(x, pos, layout="interleaved")[0] - half).max() > 0.1   # not the same map unpermuted
    # the interleaved layout, written out for one pair: channels (2, 3) are pair i = 1, rotated by m theta_1
    m, theta_1 = 4, 10000.0 ** (-2 / d)
    y = rope.forward(x, pos, layout="interleaved")[0][0, 0, m]
    c, s = np.cos(m * theta_1), np.sin(m * theta_1)
    xm = x[0, 0, m]
    np.testing.assert_allclose(y[2:4], [c * xm[2] - s * xm[3], s * xm[2] + c * xm[3]], rtol=TOL64)


@pytest.mark.parametrize("layout", rope.LAYOUTS)
def test_rope_scores_depend_only_on_relative_position(layout, rng):
    d = 16
    q, k = rng.standard_normal(d), rng.standard_normal(d)

    def score(m, n):
        qm, _ = rope.forward(q[None], np.array([m]), layout=layout)
        kn, _ = rope.forward(k[None], np.array([n]), layout=layout)
        return float(qm[0] @ kn[0])

    for m, n in [(0, 0), (5, 2), (2, 5), (100, 37)]:
        base = score(m, n)
        for shift in (1, 13, 1000, 123456):
            # float64: the scores are sums of 16 O(1) products whose angles are shift-dependent roundings
            # (~1e-16 * shift rad), so they agree to ~1e-11 even 123456 positions away.
            assert abs(score(m + shift, n + shift) - base) < 1e-9 * max(1.0, abs(base))
    assert abs(score(5, 2) - score(5, 3)) > 1e-2              # a different distance gives a different score
    assert abs(score(5, 2) - score(2, 5)) > 1e-2              # and the sign of the distance matters


def test_rope_with_an_offset_equals_the_tail_of_the_full_sequence(rng):
    # Decoding with a KV cache: the new tokens at positions t0 .. T-1 get exactly what they get in the full sequence.
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    full, _ = rope.forward(x, np.arange(9))
    tail, _ = rope.forward(x[:, :, 6:], 6 + np.arange(3))
    np.testing.assert_array_equal(tail, full[:, :, 6:])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rope_backward_is_the_inverse_rotation(dtype, rng):
    x = rng.standard_normal((3, 5, 12)).astype(dtype)
    y, cache = rope.forward(x, np.arange(5) * 97)
    back = rope.backward(y, cache)
    assert y.dtype == dtype and back.dtype == dtype
    tol = 1e-6 if dtype == np.float32 else 1e-15              # R^T R = I up to a few roundings of cos^2 + sin^2
    assert rel_error(back, x) < tol
    # a rotation keeps each vector's length
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=tol)


@given(B=st.integers(0, 3), H=st.integers(1, 3), T=st.integers(1, 6), half_d=st.integers(1, 6),
       t0=st.integers(0, 50), seed=st.integers(0, 2**16))
def test_rope_random_shapes_match_hugging_face(B, H, T, half_d, t0, seed):
    rng = np.random.default_rng(seed)
    d = 2 * half_d
    q, k = rng.standard_normal((B, H, T, d)), rng.standard_normal((B, H, T, d))
    dq, dk = rng.standard_normal(q.shape), rng.standard_normal(k.shape)
    pos = t0 + np.arange(T)
    yq, cq = rope.forward(q, pos)
    yk, ck = rope.forward(k, pos)
    ours = (yq, yk, rope.backward(dq, cq), rope.backward(dk, ck))
    for a, b in zip(ours, hf_rope(q, k, cq.cos, cq.sin, dq, dk)):
        assert a.shape == b.shape
        assert np.abs(a - b).max(initial=0) <= TOL64 * max(1.0, np.abs(b).max(initial=0))


def test_rope_bad_inputs():
    x, pos = np.zeros((2, 3, 4)), np.arange(3)
    with pytest.raises(ValueError, match=r"x: expected an even last axis \(the head size d\) >= 2, got shape \(2, 3, 5\)"):
        rope.forward(np.zeros((2, 3, 5)), pos)
    with pytest.raises(ValueError, match=r"positions: expected a shape broadcastable to \(2, 3\) \(x.shape\[:-1\]\), got \(4,\)"):
        rope.forward(x, np.arange(4))
    with pytest.raises(TypeError, match=r"positions: expected an integer numpy.ndarray, got float64"):
        rope.forward(x, np.arange(3.0))
    with pytest.raises(TypeError, match=r"x: expected dtype float32 or float64, got int64"):
        rope.forward(x.astype(np.int64), pos)
    with pytest.raises(ValueError, match=r"theta: expected a positive finite number, got 0"):
        rope.forward(x, pos, theta=0)
    with pytest.raises(TypeError, match=r"theta: expected a positive real number, got str"):
        rope.forward(x, pos, theta="1e4")
    with pytest.raises(ValueError, match=r"layout: expected one of \('half', 'interleaved'\), got 'pairs'"):
        rope.forward(x, pos, layout="pairs")
    with pytest.raises(ValueError, match=r"d: expected an even int >= 2, got 7"):
        rope.interleave_permutation(7)
    _, cache = rope.forward(x, pos)
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 3, 4\), got \(3, 2, 4\)"):
        rope.backward(np.zeros((3, 2, 4)), cache)
    with pytest.raises(TypeError, match=r"dy: expected dtype float64 \(the dtype of x\), got float32"):
        rope.backward(np.zeros((2, 3, 4), np.float32), cache)
