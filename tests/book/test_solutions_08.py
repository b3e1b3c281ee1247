"""The worked solutions of chapter 8's exercises (chapters/solutions/08_worked_example.py)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from reference.inference import summarizer
from reference.models import bert

_PATH = Path(__file__).resolve().parents[2] / "chapters" / "solutions" / "08_worked_example.py"
_spec = importlib.util.spec_from_file_location("solutions_08", _PATH)  # the file name starts with a digit
sol = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sol)


def _unit(rows):
    E = np.array(rows, dtype=np.float64)
    return E / np.linalg.norm(E, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def minilm():
    return bert.from_pretrained()


@pytest.mark.parametrize("k", [1, 2, 4])
def test_mmr_with_lambda_one_is_the_centroid_ranking(k, rng):
    E = _unit(rng.standard_normal((7, 5)))
    scores = summarizer.centrality(E, "centroid")
    assert sol.mmr_select(E, k, lam=1.0) == sorted(np.argsort(-scores, kind="stable")[:k].tolist())


def test_mmr_does_not_pick_a_duplicate_twice():
    # sentences 0 and 1 are the same vector and the two most central; 2 and 3 are central too, 4 is off topic
    E = _unit([[1, 0.2, 0], [1, 0.2, 0], [1, -0.5, 0.3], [1, 0, -0.6], [0.3, 1, 0]])
    centroid = summarizer.centrality(E, "centroid")
    assert sorted(np.argsort(-centroid)[:2].tolist()) == [0, 1]  # the plain centroid top-2 takes both copies
    picked = sol.mmr_select(E, 2, lam=0.5)
    assert len(set(picked) & {0, 1}) == 1 and len(picked) == 2


def test_attention_entropy_extremes_and_padding():
    B, H, T, n_real = 2, 3, 5, 4
    mask = np.array([[1] * n_real + [0], [1] * T])
    uniform = np.zeros((B, H, T, T))
    uniform[0, :, :, :n_real] = 1 / n_real
    uniform[1] = 1 / T
    uniform[0, :, n_real:] = np.eye(T)[0] * 0.5 + 0.1                 # a padding query row: garbage, must be ignored
    ent = sol.attention_entropy([uniform], mask)
    assert ent.shape == (1, H)
    # per row exactly log n; the mean over 4 rows of log 4 and 5 rows of log 5, to float64 round-off
    np.testing.assert_allclose(ent, (n_real * np.log(n_real) + T * np.log(T)) / (n_real + T), rtol=1e-12)
    one_hot = np.broadcast_to(np.eye(T), (B, H, T, T))
    np.testing.assert_array_equal(sol.attention_entropy([one_hot, one_hot], mask), np.zeros((2, H)))


def test_minilm_entropies_are_in_range(minilm):
    ent, T = sol.sentence_entropy("The keeper climbed the tower because the lamp had gone out.", *minilm)
    assert ent.shape == (6, 12)
    assert np.all(ent >= 0) and np.all(ent <= np.log(T) + 1e-5)  # float32 probabilities: round-off ~1e-7 per term


def test_semantic_search_prefers_meaning_over_shared_words(minilm):
    query = "How do I reset my password?"
    candidates = ["The password to the castle gate was a riddle in old verse.",
                  "Reset the kitchen timer before the bread goes in.",
                  "I forgot my login credentials and need to change them.",
                  "My dog likes long walks by the river."]
    order, scores = sol.semantic_search(query, candidates, *minilm)
    assert order[0] == 2, scores
    assert np.all(np.abs(scores) <= 1 + 1e-6)  # cosines of float32 unit vectors
