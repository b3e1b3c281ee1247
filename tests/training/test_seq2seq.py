"""reference/training/seq2seq.py: the reversal task's pairs, batches for teacher forcing, decoding and exact match."""
import numpy as np
import pytest

from reference.training import seq2seq


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
