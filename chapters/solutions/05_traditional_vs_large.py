r"""Worked solutions to the exercises of chapter 5 ("Traditional machine learning vs large models").

``tests/book/test_solutions_05.py`` runs each one on the chapter's tasks (``reference/training/textcls.py``).
"""
import numpy as np

from reference.models import classifier, logreg


def blind_transformer_on_pairs(task, n_pairs=200, seed=0):
    r"""Exercise 1: without positions, the Transformer cannot tell a verse from its reversal.

    Without :math:`PE`, the input of position t is :math:`\sqrt{C} E[\text{id}_t]` alone. Self-attention is
    permutation-equivariant (permuting the tokens permutes its outputs the same way: the scores
    :math:`q_t \cdot k_s` only move around), LayerNorm and the FFN act on each position separately, and the mean
    over positions is permutation-invariant. So the logits of any reordering of a verse, its reversal included, are
    the same, for *any* parameters: untrained here, with a random head so that the logits are not all zero.

    Returns
    -------
    gap : float
        The largest |logit(verse) - logit(reversal)| over ``n_pairs`` test pairs (float64 round-off, ~1e-15).
    accuracy : float
        On those 2 * n_pairs test examples: exactly 0.5, as each pair gets one answer for its two labels.
    """
    config = classifier.ClassifierConfig(vocab_size=len(task.vocab), n_classes=2, max_len=task.max_len,
                                         positional=False)
    rng = np.random.default_rng(seed)
    params = classifier.init_params(config, rng)
    params["head"]["W"] = rng.standard_normal(params["head"]["W"].shape)
    half = len(task.test) // 2
    fwd = slice(0, n_pairs)
    rev = slice(half, half + n_pairs)
    z_fwd, _ = classifier.forward(params, config, task.test.ids[fwd], task.test.mask[fwd])
    z_rev, _ = classifier.forward(params, config, task.test.ids[rev], task.test.mask[rev])
    pred = np.concatenate([z_fwd.argmax(axis=1), z_rev.argmax(axis=1)])
    y = np.concatenate([task.test.y[fwd], task.test.y[rev]])
    return float(np.abs(z_fwd - z_rev).max()), float(np.mean(pred == y))


def bigram_index(split, vocab_size):
    """The sorted keys ``a * V + b`` of the adjacent word pairs (a, b) that occur in ``split``."""
    pairs = split.mask[:, :-1] & split.mask[:, 1:]                               # (N, T - 1)
    return np.unique((split.ids[:, :-1] * vocab_size + split.ids[:, 1:])[pairs])


def bigram_features(split, vocab_size, index, dtype=np.float32):
    """Counts of words and of known adjacent pairs: columns [0, V) are words, V + i is the pair ``index[i]``.

    Pairs not in ``index`` (never seen in training) are dropped. Built with ``logreg.bag_of_words`` on the
    word ids side by side with the pair columns.
    """
    keys = split.ids[:, :-1] * vocab_size + split.ids[:, 1:]                     # (N, T - 1)
    pos = np.searchsorted(index, keys).clip(max=len(index) - 1)                  # (N, T - 1)
    known = (index[pos] == keys) & split.mask[:, :-1] & split.mask[:, 1:]        # (N, T - 1)
    ids = np.concatenate([split.ids, vocab_size + pos], axis=1)                   # (N, 2T - 1)
    mask = np.concatenate([split.mask, known], axis=1)                            # (N, 2T - 1)
    return logreg.bag_of_words(ids, mask, vocab_size + len(index), dtype=dtype)


def bigram_logreg_on_order_task(task, n_train=3000, l2=1e-4, steps=200):
    """Exercise 2: logistic regression on words and word pairs, for the order task.

    "the lord" and "lord the" are different columns, so the features now differ between a verse and its
    reversal, and a linear model can weigh pairs that are common forwards and rare backwards.

    Returns
    -------
    accuracy : float
        On the order task's test set (both orientations of every test verse).
    n_features : int
    """
    train = task.train_subset(n_train)
    V = len(task.vocab)
    index = bigram_index(train, V)
    X = bigram_features(train, V, index)
    W, b, _ = logreg.fit(X, train.y, 2, l2=l2, steps=steps)
    X_test = bigram_features(task.test, V, index)
    return float(np.mean(logreg.predict(X_test, W, b) == task.test.y)), X.shape[1]


def top_words(task, k=8, l2=1e-3, steps=200):
    """Exercise 3: for each class, the ``k`` words with the largest weights of a fit on the whole pool.

    A weight :math:`W_{v,c}` is how much one occurrence of word v raises the logit of class c; since the softmax
    only sees differences between logits, each word's weights are centred over the classes first.

    Returns
    -------
    dict class name -> list of k words, largest weight first
    """
    X = logreg.bag_of_words(task.pool.ids, task.pool.mask, len(task.vocab))
    W, _, _ = logreg.fit(X, task.pool.y, len(task.class_names), l2=l2, steps=steps)
    W = W - W.mean(axis=1, keepdims=True)                                        # (D, K)
    return {name: [task.vocab[v] for v in np.argsort(-W[:, c], kind="stable")[:k]]
            for c, name in enumerate(task.class_names)}
