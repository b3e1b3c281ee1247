r"""A small sequence-to-sequence task for the paper's encoder-decoder: reverse a string of digits.

The task is chosen because its answer is an alignment that can be seen: target position :math:`t` of a reversed
string of length :math:`n` copies source position :math:`n - 1 - t`, so a model that has learned it should show an
anti-diagonal in its cross-attention. It needs no corpus and no tokenizer, and exact-match accuracy on held-out
strings says plainly whether the model learned the rule or memorised examples.

Ids (one vocabulary for source and target, :data:`VOCAB_SIZE` = 13)::

    PAD = 0, BOS = 1, EOS = 2, digit k = 3 + k

A batch of pairs ``(src, tgt)`` (lists of digits) becomes, with S and T the longest source and target plus one::

    src_ids   (B, S)  digits, then EOS, then PAD          src_mask (B, S)  True = a real token (EOS included)
    tgt_in    (B, T)  BOS, then the target's digits, PAD  tgt_mask (B, T)  True = a real token
    tgt_out   (B, T)  the target's digits, then EOS, then IGNORE: the next-token labels of teacher forcing

``tgt_in`` is ``tgt_out`` shifted right by one behind a BOS, so position t of the decoder sees the target's tokens
before t and predicts token t (teacher forcing). Padding positions of ``tgt_out`` hold :data:`IGNORE`, for
``cross_entropy.forward(..., ignore_index=IGNORE)`` and ``label_smoothing.forward(..., ignore_index=IGNORE)``.

Training (:func:`train`) is the paper's recipe at a small size: teacher forcing, dropout inside the model
(``transformer.forward(..., training=True)``), the label-smoothed cross-entropy, Adam with the paper's
:math:`\beta_2 = 0.98, \epsilon = 10^{-9}`. The paper's learning-rate rule (``optim.noam``) peaks at
:math:`(d_\text{model} \cdot \text{warmup})^{-1/2}`, 1.25e-2 for a width of 64 and 100 warm-up steps, which is made
for width 512 and thousands of steps; here a linear warm-up to :attr:`ReversalRun.lr` and a cosine decay
(``optim.warmup_cosine``) take its place. Evaluation is greedy decoding (``reference/inference/seq2seq.py``) and
exact match; :func:`alignment_mass` measures how much cross-attention sits on the anti-diagonal.
"""
import dataclasses

import numpy as np

from reference.inference import seq2seq as seq2seq_decoding
from reference.models import transformer
from reference.ops import label_smoothing
from reference.training import optim

PAD, BOS, EOS = 0, 1, 2
DIGIT0 = 3
VOCAB_SIZE = DIGIT0 + 10
IGNORE = -1


def reversal_pairs(n, min_len, max_len, rng, exclude=()):
    """``n`` distinct random digit strings of length in [min_len, max_len] and their reversals.

    Parameters
    ----------
    n : int >= 0
    min_len, max_len : 1 <= min_len <= max_len
    rng : numpy.random.Generator
    exclude : collection of tuples; strings never to return (the training set, when drawing a test set)

    Returns
    -------
    list of (src, tgt) tuples of ints in 0..9, ``tgt == src[::-1]``
    """
    if not (isinstance(min_len, (int, np.integer)) and isinstance(max_len, (int, np.integer))
            and 1 <= min_len <= max_len):
        raise ValueError(f"min_len, max_len: expected 1 <= min_len <= max_len, got {min_len!r}, {max_len!r}")
    available = sum(10 ** k for k in range(min_len, max_len + 1)) - len(set(exclude))
    if not 0 <= n <= available:
        raise ValueError(f"n: expected 0 <= n <= {available} distinct strings of length {min_len}..{max_len}, got {n}")
    seen, pairs = set(exclude), []
    while len(pairs) < n:
        length = int(rng.integers(min_len, max_len + 1))
        src = tuple(int(d) for d in rng.integers(0, 10, size=length))
        if src not in seen:
            seen.add(src)
            pairs.append((src, src[::-1]))
    return pairs


def make_batch(pairs):
    """Padded id arrays for teacher forcing (module docstring): src_ids, src_mask, tgt_in, tgt_out, tgt_mask."""
    if not pairs:
        raise ValueError("pairs: expected at least one (src, tgt) pair")
    B = len(pairs)
    S = max(len(s) for s, _ in pairs) + 1                           # + EOS
    T = max(len(t) for _, t in pairs) + 1                           # + BOS (in) or EOS (out)
    src_ids = np.full((B, S), PAD, dtype=np.int64)
    tgt_in = np.full((B, T), PAD, dtype=np.int64)
    tgt_out = np.full((B, T), IGNORE, dtype=np.int64)
    for b, (src, tgt) in enumerate(pairs):
        src_ids[b, :len(src)] = np.asarray(src, dtype=np.int64) + DIGIT0
        src_ids[b, len(src)] = EOS
        tgt_in[b, 0] = BOS
        tgt_in[b, 1:len(tgt) + 1] = np.asarray(tgt, dtype=np.int64) + DIGIT0
        tgt_out[b, :len(tgt)] = np.asarray(tgt, dtype=np.int64) + DIGIT0
        tgt_out[b, len(tgt)] = EOS
    return src_ids, src_ids != PAD, tgt_in, tgt_in != PAD, tgt_out


def decode_digits(ids):
    """The digits of one generated sequence of ids, up to (not including) the first EOS; other specials dropped."""
    out = []
    for i in np.asarray(ids).tolist():
        if i == EOS:
            break
        if i >= DIGIT0:
            out.append(i - DIGIT0)
    return tuple(out)


def exact_match(predicted, pairs):
    """The fraction of pairs whose predicted digit string (a tuple per pair) equals the target exactly."""
    if len(predicted) != len(pairs):
        raise ValueError(f"predicted: expected {len(pairs)} sequences, one per pair, got {len(predicted)}")
    return float(np.mean([tuple(p) == tuple(t) for p, (_, t) in zip(predicted, pairs)])) if pairs else 0.0


@dataclasses.dataclass(frozen=True)
class ReversalRun:
    """A training run of the reversal task: the data, the model's sizes, the regularisers and the optimisation.

    The defaults are the book's full-mode run (chapter 6.11): strings of 3 to 8 digits, 20 000 training pairs, a
    2 + 2 layer post-LN model of width 64, the paper's dropout and label smoothing (0.1 each), 800 steps of 64 pairs.
    """

    min_len: int = 3
    max_len: int = 8
    n_train: int = 20_000
    d_model: int = 64
    n_layer: int = 2
    n_head: int = 4
    d_ff: int = 128
    norm: str = "post"
    p_drop: float = 0.1
    label_smoothing: float = 0.1
    batch_size: int = 64
    steps: int = 800
    lr: float = 2e-3
    warmup: int = 100
    seed: int = 0
    dtype: str = "float32"

    def model_config(self):
        """The transformer.TransformerConfig of this run (one vocabulary for source and target)."""
        return transformer.TransformerConfig(src_vocab_size=VOCAB_SIZE, tgt_vocab_size=VOCAB_SIZE,
                                             d_model=self.d_model, n_head=self.n_head, n_layer=self.n_layer,
                                             d_ff=self.d_ff, norm=self.norm, p_drop=self.p_drop)


def train(run, eval_pairs=(), eval_every=0):
    """Train the encoder-decoder on digit reversal with teacher forcing, dropout and label smoothing.

    Each step draws ``run.batch_size`` distinct training pairs, runs the model in training mode (dropout on), takes
    the label-smoothed cross-entropy over the real target positions (EOS included), and makes one Adam step.

    Parameters
    ----------
    run : ReversalRun
    eval_pairs : list of (src, tgt), optional
        Held-out pairs whose greedy exact match is measured every ``eval_every`` steps and after the last one. The
        training pairs are drawn without their sources, so they are never trained on.
    eval_every : int >= 0
        0: only after the last step (when ``eval_pairs`` is given).

    Returns
    -------
    dict with ``params`` (the trained parameters), ``config`` (TransformerConfig), ``train_pairs``, ``loss`` (the
    label-smoothed training loss of every step, in nats), ``lr`` (the rate of every step), ``eval`` (a list of
    ``(step, exact match on eval_pairs)``).
    """
    if not isinstance(run, ReversalRun):
        raise TypeError(f"run: expected a ReversalRun, got {type(run).__name__}")
    if run.batch_size > run.n_train:
        raise ValueError(f"run.batch_size: expected at most run.n_train = {run.n_train}, got {run.batch_size}")
    config = run.model_config()
    # one stream per use, so that changing, say, the number of steps leaves the data and the init as they were
    data_rng, init_rng, batch_rng, drop_rng = (np.random.default_rng([run.seed, k]) for k in range(4))
    held_out = {src for src, _ in eval_pairs}
    train_pairs = reversal_pairs(run.n_train, run.min_len, run.max_len, data_rng, exclude=held_out)
    params = transformer.init_params(config, init_rng, dtype=np.dtype(run.dtype))
    state = optim.adam_init(params)
    losses, rates, evals = [], [], []
    for step in range(1, run.steps + 1):
        batch = [train_pairs[i] for i in batch_rng.choice(run.n_train, size=run.batch_size, replace=False)]
        src_ids, src_mask, tgt_in, tgt_mask, tgt_out = make_batch(batch)
        logits, cache = transformer.forward(params, config, src_ids, tgt_in, src_mask, tgt_mask,
                                            training=True, rng=drop_rng)             # (B, T, V), dropout on
        loss, c_loss = label_smoothing.forward(logits, tgt_out, run.label_smoothing, ignore_index=IGNORE)
        grads = transformer.backward(label_smoothing.backward(1.0, c_loss), cache)
        lr = optim.warmup_cosine(step, run.lr, run.warmup, run.steps)
        optim.adam_step(params, grads, state, lr, betas=(0.9, 0.98), eps=1e-9)   # the paper's Adam (§5.3)
        losses.append(float(loss))
        rates.append(lr)
        if eval_pairs and ((eval_every and step % eval_every == 0) or step == run.steps):
            evals.append((step, exact_match(predict(params, config, eval_pairs), eval_pairs)))
    return {"params": params, "config": config, "train_pairs": train_pairs, "loss": np.array(losses),
            "lr": np.array(rates), "eval": evals}


def predict(params, config, pairs, batch_size=512):
    """The greedy reversal of each pair's source: a list of digit tuples, one per pair (evaluation mode)."""
    out = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        src_ids, src_mask, *_ = make_batch(chunk)
        longest = max(len(t) for _, t in chunk)
        tokens, _ = seq2seq_decoding.greedy(params, config, src_ids, BOS, EOS, longest + 2, src_mask)
        out += [decode_digits(row) for row in tokens]
    return out


def alignment_mass(probs, src_lengths, offset=0):
    r"""Mean cross-attention on the reversal's alignment, per head: :math:`\frac{1}{\sum_b n_b} \sum_b \sum_{t < n_b}
    P_b[t,\, n_b - 1 - t + \text{offset}]`.

    Output token t of a reversed string of length n is source token n - 1 - t, and decoder position t (the one
    whose input is BOS or output token t - 1) predicts it: a head that reads the token it is about to copy puts its
    weight on that anti-diagonal. ``offset`` = 1 measures the diagonal just right of it (key n - t, one later),
    and so on; entries that fall outside the string count 0.

    Parameters
    ----------
    probs : ndarray (B, H, T, S)
        One decoder layer's cross-attention (``transformer.cross_attention``) on a teacher-forced batch from
        :func:`make_batch` (T and S at least the longest source).
    src_lengths : sequence of B ints
        The number of digits of each source.
    offset : int

    Returns
    -------
    mass : ndarray (H,)
        Between 0 and 1; uniform attention over a source of n digits and its EOS gives 1 / (n + 1)
        (:func:`alignment_chance`).
    """
    probs = np.asarray(probs)
    if probs.ndim != 4 or probs.shape[0] != len(src_lengths):
        raise ValueError(f"probs: expected shape (B, H, T, S) with B = len(src_lengths) = {len(src_lengths)}, "
                         f"got {probs.shape}")
    if len(src_lengths) and min(probs.shape[2:]) < max(src_lengths):
        raise ValueError(f"probs: expected T and S of at least the longest source ({max(src_lengths)} digits), got "
                         f"T, S = {probs.shape[2:]} (teacher-forced batches from make_batch have them)")
    total, count = np.zeros(probs.shape[1]), 0
    for b, n in enumerate(src_lengths):
        t = np.arange(n)                                           # decoder positions that predict a digit
        key = n - 1 - t + offset                                   # the source position each one copies
        inside = (key >= 0) & (key < n)
        total += probs[b][:, t[inside], key[inside]].sum(axis=-1)  # (H,)
        count += n
    return total / count


def alignment_chance(src_lengths):
    """What :func:`alignment_mass` gives for uniform attention over each source's digits and its EOS."""
    return float(np.sum([n / (n + 1) for n in src_lengths]) / np.sum(src_lengths))
