"""reference/training/seq2seq.py: the reversal task's pairs, batches for teacher forcing, decoding and exact match;
training (a tiny run learns), its reproducibility, and the cross-attention's alignment measure."""
import dataclasses

import numpy as np
import pytest

from reference import tree
from reference.models import transformer
from reference.training import optim, seq2seq


def test_pairs_are_distinct_reversals_and_a_test_set_avoids_the_training_set():
    rng = np.random.default_rng(0)
    train = seq2seq.reversal_pairs(500, 2, 6, rng)
    assert len({s for s, _ in train}) == 500
    assert all(t == s[::-1] and 2 <= len(s) <= 6 for s, t in train)
    test = seq2seq.reversal_pairs(200, 2, 6, rng, exclude={s for s, _ in train})
    assert not {s for s, _ in test} & {s for s, _ in train}


def test_batch_layout_for_teacher_forcing():
    src_ids, src_mask, tgt_in, tgt_mask, tgt_out = seq2seq.make_batch([((1, 2, 3), (3, 2, 1)), ((7,), (7,))])
    D = seq2seq.DIGIT0
    np.testing.assert_array_equal(src_ids, [[1 + D, 2 + D, 3 + D, seq2seq.EOS], [7 + D, seq2seq.EOS, 0, 0]])
    np.testing.assert_array_equal(src_mask, [[1, 1, 1, 1], [1, 1, 0, 0]])
    np.testing.assert_array_equal(tgt_in, [[seq2seq.BOS, 3 + D, 2 + D, 1 + D], [seq2seq.BOS, 7 + D, 0, 0]])
    np.testing.assert_array_equal(tgt_out, [[3 + D, 2 + D, 1 + D, seq2seq.EOS], [7 + D, seq2seq.EOS, -1, -1]])
    np.testing.assert_array_equal(tgt_mask, tgt_out != seq2seq.IGNORE)
    # teacher forcing: the input is the label shifted right behind BOS, at every real position
    assert np.all(tgt_in[:, 1:][tgt_mask[:, 1:]] == tgt_out[:, :-1][tgt_mask[:, 1:]])


def test_decode_and_exact_match():
    D = seq2seq.DIGIT0
    assert seq2seq.decode_digits([4 + D, 0 + D, seq2seq.EOS, 5 + D]) == (4, 0)
    assert seq2seq.decode_digits([seq2seq.BOS, 9 + D]) == (9,)
    pairs = [((1, 2), (2, 1)), ((3,), (3,))]
    assert seq2seq.exact_match([(2, 1), (4,)], pairs) == 0.5


def test_bad_inputs():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="1 <= min_len <= max_len"):
        seq2seq.reversal_pairs(3, 4, 2, rng)
    with pytest.raises(ValueError, match=r"n: expected 0 <= n <= 10 distinct strings"):
        seq2seq.reversal_pairs(11, 1, 1, rng)
    with pytest.raises(ValueError, match="one per pair"):
        seq2seq.exact_match([(1,)], [((1,), (1,)), ((2,), (2,))])


# ---------------------------------------------------------------------------------------------------------------
# Training, prediction and the alignment measure.

TINY_RUN = seq2seq.ReversalRun(min_len=2, max_len=4, n_train=2000, d_model=32, n_layer=1, n_head=2, d_ff=64,
                               batch_size=32, steps=300, lr=3e-3, warmup=30)


def test_a_tiny_run_learns_to_reverse_and_attends_along_the_anti_diagonal():
    # ~2.5 s. Seeds 0-3 of this run reach 0.45-0.58 exact match on these 200 unseen strings of 2-4 digits
    # (guessing: ~1e-3), the loss falls from 2.9-3.2 to ~1.0 nats (mean of the first and last 10 steps), and the best
    # head's anti-diagonal mass is 0.63-0.66 against 0.24 for uniform attention; the bounds below hold all of them
    # with a margin, and fail for a model that learned nothing, or whose dropout, label smoothing or backward were
    # broken.
    held_out = seq2seq.reversal_pairs(200, 2, 4, np.random.default_rng(9))
    result = seq2seq.train(TINY_RUN, eval_pairs=held_out, eval_every=150)
    assert not {s for s, _ in result["train_pairs"]} & {s for s, _ in held_out}
    assert [step for step, _ in result["eval"]] == [150, 300]
    loss = result["loss"]
    assert loss.shape == (300,) and loss[-10:].mean() < 0.5 * loss[:10].mean()
    assert result["eval"][-1][1] > 0.25
    predicted = seq2seq.predict(result["params"], result["config"], held_out)
    assert seq2seq.exact_match(predicted, held_out) == result["eval"][-1][1]
    src_ids, src_mask, tgt_in, tgt_mask, _ = seq2seq.make_batch(held_out)
    _, cache = transformer.forward(result["params"], result["config"], src_ids, tgt_in, src_mask, tgt_mask)
    lengths = [len(s) for s, _ in held_out]
    mass = seq2seq.alignment_mass(transformer.cross_attention(cache)[-1], lengths)
    assert mass.max() > 2 * seq2seq.alignment_chance(lengths)


def test_training_is_reproducible_and_its_rate_schedule_is_warmup_cosine():
    run = dataclasses.replace(TINY_RUN, steps=4, warmup=2)
    a, b = seq2seq.train(run), seq2seq.train(run)
    np.testing.assert_array_equal(a["loss"], b["loss"])
    for x, y in zip(tree.flatten(a["params"]).values(), tree.flatten(b["params"]).values()):
        np.testing.assert_array_equal(x, y)
    assert a["params"]["wte_src"].dtype == np.float32
    np.testing.assert_allclose(a["lr"], [optim.warmup_cosine(s, run.lr, 2, 4) for s in range(1, 5)])
    c = seq2seq.train(dataclasses.replace(run, seed=1))
    assert not np.array_equal(a["loss"], c["loss"])


def test_alignment_mass_on_known_attention():
    # Two sources of 3 and 2 digits, S = T = 4 (the longest + 1), two heads: head 0 exactly on the anti-diagonal,
    # head 1 uniform over each source's digits and EOS.
    lengths = [3, 2]
    P = np.zeros((2, 2, 4, 4))
    for b, n in enumerate(lengths):
        for t in range(n):
            P[b, 0, t, n - 1 - t] = 1.0
        P[b, 1, :, :n + 1] = 1.0 / (n + 1)
    np.testing.assert_allclose(seq2seq.alignment_mass(P, lengths), [1.0, seq2seq.alignment_chance(lengths)])
    assert seq2seq.alignment_chance(lengths) == pytest.approx((3 / 4 + 2 / 3) / 5)
    # one to the right of the anti-diagonal: head 0 has nothing there; the last position of each row falls outside
    np.testing.assert_allclose(seq2seq.alignment_mass(P, lengths, offset=1)[0], 0.0)
    with pytest.raises(ValueError, match=r"probs: expected shape \(B, H, T, S\)"):
        seq2seq.alignment_mass(P[0], lengths)
    with pytest.raises(ValueError, match="at least the longest source"):
        seq2seq.alignment_mass(P, [5, 2])


def test_train_bad_arguments_raise():
    with pytest.raises(TypeError, match="run: expected a ReversalRun"):
        seq2seq.train({"steps": 1})
    with pytest.raises(ValueError, match="batch_size: expected at most"):
        seq2seq.train(dataclasses.replace(TINY_RUN, n_train=10, batch_size=32))
