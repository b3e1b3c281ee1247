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
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(DOC.encode("utf-8"))))
    assert summarize_cmd.main(["--k", "2", "--method", "centroid"]) == 0
    assert capsys.readouterr().out.splitlines() == expected
    with pytest.raises(SystemExit):
        summarize_cmd.main([str(tmp_path / "missing.txt")])
    assert "cannot read" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# At real sizes, and in the material's language
# ---------------------------------------------------------------------------------------------------------------

# The material's section 2.1, its first two paragraphs (the book quotes the material; it is not part of the repo).
CHINESE = ("模型训练是指通过学习数据中的样本和标签，使模型能够从中抽取出特征和规律，并在未知数据上进行预测的过程。"
           "大模型通常采用深度学习技术进行训练，如卷积神经网络、递归神经网络和Transformer等。\n\n"
           "模型推理是指使用训练好的模型在新数据上进行预测的过程。大模型的推理通常需要高性能计算设备，如GPU和TPU，"
           "以便在合理的时间内完成计算。")


def test_list_numbers_are_not_sentences():
    assert sm.split_sentences("1. First point. 2. Second point.\n(b) third. iv. fourth. Version 2. Done.") == [
        "1. First point.", "2. Second point.", "(b) third.", "iv. fourth.", "Version 2.", "Done."]


def unit_rows(rng, N, C):
    E = rng.normal(size=(N, C))
    return E / np.linalg.norm(E, axis=1, keepdims=True)


@pytest.mark.parametrize("N, C", [(9, 4), (40, 3), (300, 8)])
def test_sparse_textrank_with_every_neighbour_is_textrank(rng, N, C):
    E = unit_rows(rng, N, C)
    # the same fixed point by the same iteration, summed in another order: round-off ~1e-16 per step, and the
    # stopping rule leaves at most 1e-12 / (1 - 0.85) of error in each
    np.testing.assert_allclose(sm.textrank_sparse(E, k=N - 1, block=7), sm.textrank(E @ E.T), rtol=0, atol=1e-10)


def test_large_n_never_builds_the_n_by_n_matrix(rng):
    import tracemalloc

    N = sm.DENSE_MAX * 3                                    # 6000 sentences: a dense float64 N x N is 288 MB
    E = unit_rows(rng, N, 16).astype(np.float32)
    tracemalloc.start()
    try:
        r = sm.centrality(E, "textrank")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # a block of rows (128 x 6000 float64, 6 MB), the copy argpartition sorts and its int64 result dominate; the dense
    # N x N matrix alone would be 288 MB, and textrank makes three of them
    assert peak < 40e6, f"peak {peak / 1e6:.0f} MB"
    assert r.shape == (N,) and np.all(r > 0) and abs(r.sum() - 1) < 1e-9


def test_embedding_in_bounded_batches_equals_embed_sentences(model, monkeypatch):
    sentences = sm.split_sentences(DOC + " " + DOC2) + ["word " * 300]      # the last one is truncated to 256
    with pytest.warns(UserWarning, match="truncated"):
        expected = bert.embed_sentences(sentences, *model)
    shapes = []
    forward = bert.forward

    def recording(params, config, ids, mask):
        shapes.append(ids.shape)
        return forward(params, config, ids, mask)

    monkeypatch.setattr(sm.bert, "forward", recording)
    with pytest.warns(UserWarning, match="1 sentence"):
        got = sm.embed(sentences, *model, token_budget=64)
    # float32 with different batch shapes (BLAS may block the sums differently): ~1e-7 per entry
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert sum(b for b, _ in shapes) == len(sentences)
    assert all(b * T <= 64 or b == 1 for b, T in shapes)                     # within budget, or one long sentence
    assert max(T for _, T in shapes) == 256


def test_char_ngram_centroid_is_the_tfidf_cosine():
    sentences = ["abc abc", "abd", "xyz"]
    # the definition with dense vectors over the n-gram vocabulary
    grams = [sm.char_ngrams(s) for s in sentences]
    vocab = sorted(set().union(*grams))
    df = np.array([sum(g in c for c in grams) for g in vocab])
    idf = np.log((1 + 3) / (1 + df)) + 1
    V = np.array([[(1 + np.log(c[g])) if g in c else 0 for g in vocab] for c in grams]) * idf
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    c = V.mean(axis=0)
    np.testing.assert_allclose(sm.char_ngram_centroid(sentences), V @ c / np.linalg.norm(c), rtol=0, atol=1e-12)
    assert sm.char_ngrams("ab  c") == sm.char_ngrams("ab c")


def test_a_language_minilm_does_not_know_falls_back_and_says_so(model):
    assert sm.unk_rate(sm.split_sentences(DOC)) == 0.0
    rate = sm.unk_rate(sm.split_sentences(CHINESE))
    assert rate > 0.5                                       # most Chinese characters are [UNK] to MiniLM
    with pytest.warns(UserWarning, match=r"unknown to MiniLM's English vocabulary .* character n-gram"):
        result = sm.summarize_detailed(CHINESE, k=2, params=model[0], config=model[1])
    assert result.scorer == "char n-gram TF-IDF centroid" and result.unk_rate == rate
    assert len(result.sentences) == 2 and result.n_sentences == 4
    english = sm.summarize_detailed(DOC, k=2, params=model[0], config=model[1])
    assert english.scorer == "MiniLM textrank" and english.unk_rate == 0.0
    forced = sm.summarize_detailed(CHINESE, k=2, scorer="minilm", params=model[0], config=model[1])
    assert forced.scorer == "MiniLM textrank"


def test_non_utf8_input_is_one_error_for_a_file_and_stdin(tmp_path, model):
    raw = "Caf\u00e9 culture. Tea is fine.".encode("latin-1")                # 0xe9 is not UTF-8 on its own
    path = tmp_path / "latin.txt"
    path.write_bytes(raw)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "reference.summarize"]
    by_file = subprocess.run(cmd + [str(path)], capture_output=True, env=env, cwd=ROOT)
    by_stdin = subprocess.run(cmd, input=raw, capture_output=True, env=env, cwd=ROOT)
    for done, name in ((by_file, str(path)), (by_stdin, "standard input")):
        assert done.returncode == 2 and done.stdout == b""
        err = done.stderr.decode()
        assert err == (f"python -m reference.summarize: error: {name} is not valid utf-8: byte(s) e9 at offset 3 "
                       f"(invalid continuation byte); give the file's encoding with --encoding, e.g. --encoding "
                       f"gb18030\n")
    ok = subprocess.run(cmd + [str(path), "--encoding", "latin-1", "--k", "1"], capture_output=True, env=env,
                        cwd=ROOT, text=True)
    assert ok.returncode == 0 and ok.stdout.strip() in ("Caf\u00e9 culture.", "Tea is fine.")
    assert "1 of 2 sentences, chosen by MiniLM textrank" in ok.stderr
