"""reference/inference/summarizer.py: sentence splitting, the two centrality scores, and the summariser end to end."""
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reference import summarize as summarize_cmd
from reference.inference import summarizer as sm
from reference.models import bert

ROOT = Path(__file__).resolve().parents[2]

# Written for this test: five sentences on one topic and one that is off it.
DOC = (
    "Photosynthesis lets plants turn light into chemical energy. "
    "In the chloroplasts, chlorophyll absorbs sunlight and drives the splitting of water.\n"
    "My neighbour bought a red bicycle on Tuesday. "
    "The energy captured from light is stored in sugars built from carbon dioxide. "
    "Plants release the oxygen from the split water into the air. "
    "Without photosynthesis, most life on Earth would have no source of food or oxygen."
)
DOC2 = (
    "A language model generates text one token at a time. "
    "Each new token is predicted from all the tokens before it. "
    "The recipe calls for two eggs and a cup of flour. "
    "Caching the keys and values of earlier tokens saves the model from recomputing them at every step. "
    "With this cache, generating a token costs time proportional to the length of the text so far."
)
OFF_TOPIC = {DOC: "My neighbour bought a red bicycle on Tuesday.",
             DOC2: "The recipe calls for two eggs and a cup of flour."}


@pytest.fixture(scope="module")
def model():
    return bert.from_pretrained()


def test_split_sentences():
    text = ('Hello world. This is "quoted." Pi is 3.14, see example.com now! Really?! Yes...\n\n'
            "A heading\n\nWrapped\n   line (aside.) 我爱自然语言。它很有趣！好")
    assert sm.split_sentences(text) == [
        "Hello world.", 'This is "quoted."', "Pi is 3.14, see example.com now!", "Really?!", "Yes...",
        "A heading", "Wrapped line (aside.)", "我爱自然语言。", "它很有趣！", "好"]
    assert sm.split_sentences("") == [] and sm.split_sentences(" \n ") == []
    assert len(sm.split_sentences(DOC)) == 6


def test_textrank_is_the_pagerank_fixed_point(rng):
    E = rng.normal(size=(7, 5))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    S = E @ E.T
    r = sm.textrank(S, damping=0.85)
    # the same fixed point from linear algebra: the eigenvector of eigenvalue 1 of the Google matrix
    W = np.maximum(S, 0)
    np.fill_diagonal(W, 0)
    P = W / W.sum(axis=1, keepdims=True)
    G = 0.85 * P.T + 0.15 / 7
    vals, vecs = np.linalg.eig(G)
    v = np.real(vecs[:, np.argmax(np.real(vals))])
    v /= v.sum()
    # power iteration stopped at an L1 step below 1e-12; the error left is at most that / (1 - 0.85) ~ 7e-12
    np.testing.assert_allclose(r, v, rtol=0, atol=1e-10)
    assert abs(r.sum() - 1) < 1e-12


def test_textrank_handles_a_sentence_with_no_positive_edge():
    S = np.array([[1.0, 0.9, -0.2], [0.9, 1.0, -0.1], [-0.2, -0.1, 1.0]])
    r = sm.textrank(S)
    assert np.all(r > 0) and abs(r.sum() - 1) < 1e-12
    assert r[2] < r[0] and r[0] == pytest.approx(r[1], abs=1e-12)


def test_centroid_scores(rng):
    E = rng.normal(size=(4, 3))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    c = E.mean(axis=0)
    expected = [e @ c / np.linalg.norm(c) for e in E]
    np.testing.assert_allclose(sm.centrality(E, "centroid"), expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("doc", [DOC, DOC2], ids=["photosynthesis", "decoding"])
@pytest.mark.parametrize("method", sm.METHODS)
def test_summary_keeps_central_sentences_in_order(model, method, doc):
    sentences = sm.split_sentences(doc)
    summary = sm.summarize(doc, k=3, method=method, params=model[0], config=model[1])
    assert len(summary) == 3
    assert OFF_TOPIC[doc] in sentences and OFF_TOPIC[doc] not in summary
    positions = [sentences.index(s) for s in summary]
    assert positions == sorted(positions)


def test_short_texts_and_bad_arguments(model):
    assert sm.summarize("Only one sentence here.", k=3, params=model[0], config=model[1]) == [
        "Only one sentence here."]
    assert sm.summarize("", k=2) == []
    with pytest.raises(ValueError, match="positive int"):
        sm.summarize(DOC, k=0)
    with pytest.raises(ValueError, match="method"):
        sm.summarize(DOC, method="lexrank")
    with pytest.raises(TypeError, match="str"):
        sm.split_sentences(None)


def test_command_line_reads_a_file_and_stdin(model, tmp_path, monkeypatch, capsys):
    path = tmp_path / "doc.txt"
    path.write_text(DOC, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "reference.summarize", str(path), "--k", "2", "--method", "centroid"],
                          capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    expected = sm.summarize(DOC, k=2, method="centroid", params=model[0], config=model[1])
    assert done.stdout.splitlines() == expected
    monkeypatch.setattr(sys, "stdin", io.StringIO(DOC))
    assert summarize_cmd.main(["--k", "2", "--method", "centroid"]) == 0
    assert capsys.readouterr().out.splitlines() == expected
    with pytest.raises(SystemExit):
        summarize_cmd.main([str(tmp_path / "missing.txt")])
    assert "cannot read" in capsys.readouterr().err
