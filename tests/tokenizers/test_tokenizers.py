"""The character tokenizer and the byte-level BPE (reference/tokenizers/)."""
import re
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference import tokenizers
from reference.tokenizers import ByteBPE, CharTokenizer
from reference.tokenizers.bpe import N_BYTES, PATTERN, _merge
from reference.training import data

# Text the small tokenizers train on: English with some accented letters, CJK and an emoji, so that merges
# also join the bytes of multi-byte characters.
MIXED = ("Thé café servéd crème brûlée, naïve façade. 世界你好世界你好 🙂🙂 "
         "In the beginning God created the heaven and the earth. ") * 20


@pytest.fixture(scope="module")
def corpus():
    return data.load_corpus()


@pytest.fixture(scope="module")
def small_bpe():
    return ByteBPE.train(MIXED, N_BYTES + 120, progress=False)


@pytest.fixture(scope="module")
def char_tok():
    return CharTokenizer.train(MIXED)


# --- character tokenizer --------------------------------------------------------------------------------------


def test_char_ids_are_sorted_characters_then_bytes():
    tok = CharTokenizer.train("banana\n")
    assert tok.chars == ["\n", "a", "b", "n"] and tok.vocab_size == 4 + 256
    assert tok.encode("nab\n") == [3, 1, 2, 0]
    # 'é' is unseen: its two UTF-8 bytes 0xC3 0xA9 take the fallback ids 4 + byte.
    assert tok.encode("aé") == [1, 4 + 0xC3, 4 + 0xA9]
    assert tok.decode([1, 4 + 0xC3, 4 + 0xA9, 2]) == "aéb"


@given(st.text())
def test_char_round_trips_any_string(char_tok, s):
    assert char_tok.decode(char_tok.encode(s)) == s


def test_char_on_the_corpus_is_one_token_per_character(corpus):
    train, val = data.train_val_split(corpus)
    tok = CharTokenizer.train(train)
    ids = tok.encode(val)
    assert len(tok.chars) == 63 and tok.vocab_size == 63 + 256
    assert len(ids) == len(val) and max(ids) < len(tok.chars)   # no fallback needed on the validation text
    assert tok.decode(ids) == val


def test_char_invalid_byte_runs_decode_with_replacement_and_bad_ids_are_refused():
    tok = CharTokenizer.train("a")
    assert tok.decode([1 + 0xFF, 0]) == "\ufffda"              # 0xFF is never valid UTF-8
    with pytest.raises(ValueError, match=r"ids in \[0, 257\), got 257"):
        tok.decode([257])
    with pytest.raises(TypeError, match="str"):
        tok.encode(b"a")


def test_char_save_load_and_from_json(char_tok, tmp_path):
    path = tmp_path / "char.json"
    char_tok.save(path)
    for tok in (CharTokenizer.load(path), tokenizers.from_json(char_tok.to_json())):
        assert isinstance(tok, CharTokenizer) and tok.chars == char_tok.chars
        assert tok.encode(MIXED + "ü") == char_tok.encode(MIXED + "ü")


# --- byte-level BPE -------------------------------------------------------------------------------------------


def naive_train(text, n_merges):
    """BPE the slow, obvious way: recount every pair of every word before each merge."""
    words = Counter(re.findall(PATTERN, text))
    segs = {w: list(w.encode("utf-8")) for w in words}
    merges = []
    for k in range(n_merges):
        counts = Counter()
        for w, f in words.items():
            for p in zip(segs[w], segs[w][1:]):
                counts[p] += f
        if not counts:
            break
        best = max(counts.values())
        pair = min(p for p, c in counts.items() if c == best)   # ties: the smallest pair, as ByteBPE does
        merges.append(pair)
        segs = {w: _merge(s, pair, N_BYTES + k) for w, s in segs.items()}
    return merges


def naive_encode(merges, text):
    """Encode by replaying every merge, in training order, on every pre-token."""
    ids = []
    for piece in re.findall(PATTERN, text):
        seg = list(piece.encode("utf-8"))
        for k, pair in enumerate(merges):
            seg = _merge(seg, pair, N_BYTES + k)
        ids.extend(seg)
    return ids


def test_incremental_training_equals_naive_training(corpus):
    text = corpus[:30_000] + MIXED
    assert ByteBPE.train(text, N_BYTES + 150, progress=False).merges == naive_train(text, 150)


def test_encode_equals_replaying_the_merges(corpus, small_bpe):
    tok = ByteBPE.train(corpus[:30_000], N_BYTES + 150, progress=False)
    for t, text in ((tok, corpus[30_000:36_000]), (small_bpe, MIXED[:300] + "Größe façade 世界")):
        assert t.encode(text) == naive_encode(t.merges, text)


@given(st.text())
def test_bpe_round_trips_any_string(small_bpe, s):
    ids = small_bpe.encode(s)
    assert all(0 <= i < small_bpe.vocab_size for i in ids)
    assert small_bpe.decode(ids) == s


@given(st.text())
def test_pretokens_concatenate_back_to_the_text(small_bpe, s):
    assert "".join(small_bpe.pretokenize(s)) == s


def test_pretokenisation_keeps_the_space_with_the_next_word(small_bpe):
    assert small_bpe.pretokenize("And God said, Let there be  light's 42!\n") == [
        "And", " God", " said", ",", " Let", " there", " be", " ", " light", "'s", " 42", "!", "\n"]


def test_bpe_on_a_corpus_slice_compresses_and_learns_words(corpus):
    train, val = data.train_val_split(corpus[:220_000], val_fraction=20_000 / 220_000)
    tok = ByteBPE.train(train, N_BYTES + 200, progress=False)
    assert tok.vocab_size == N_BYTES + 200 == N_BYTES + len(tok.merges)
    assert tok.token_bytes(N_BYTES) == b"th"                 # the most frequent pair of English bytes
    assert b" the" in {tok.token_bytes(i) for i in range(N_BYTES, tok.vocab_size)}
    ids = tok.encode(val)
    assert tok.decode(ids) == val
    # 200 merges already cut the sequence length by more than half (measured: 2.4 characters per token).
    assert len(val) / len(ids) > 2.0


def test_bpe_stops_when_no_pair_is_left():
    # Pre-tokens "ab" and " ab": merge (a, b) (count 2), then (" ", ab) (count 1), then nothing is left to pair.
    tok = ByteBPE.train("ab ab", N_BYTES + 50, progress=False)
    assert [tok.token_bytes(i) for i in range(N_BYTES, tok.vocab_size)] == [b"ab", b" ab"]


def test_bpe_save_load_and_from_json(small_bpe, tmp_path):
    path = tmp_path / "bpe.json"
    small_bpe.save(path)
    for tok in (ByteBPE.load(path), tokenizers.from_json(small_bpe.to_json())):
        assert isinstance(tok, ByteBPE) and tok.merges == small_bpe.merges and tok.pattern == small_bpe.pattern
        assert tok.encode(MIXED) == small_bpe.encode(MIXED)


def test_bpe_errors(small_bpe):
    with pytest.raises(ValueError, match="vocab_size: expected an integer >= 256, got 255"):
        ByteBPE.train("abc", 255, progress=False)
    with pytest.raises(ValueError, match=r"merges\[1\]: expected a pair of ids below 257"):
        ByteBPE([(97, 98), (300, 1)])
    with pytest.raises(ValueError, match=rf"ids in \[0, {small_bpe.vocab_size}\)"):
        small_bpe.decode([small_bpe.vocab_size])
    with pytest.raises(TypeError, match="str"):
        small_bpe.encode(["a"])
    with pytest.raises(ValueError, match="tokenizer JSON"):
        tokenizers.from_json('{"type": "WordPiece"}')
    assert small_bpe.decode([0xFF]) == "\ufffd"              # a lone invalid byte decodes to a replacement


@pytest.mark.parametrize("s, message", [
    ("null", "got a JSON null"),
    ("[1, 2]", "got a JSON array"),
    ("not json", "got text that is not JSON"),
    ('{"type": "Mystery"}', "got type 'Mystery'"),
    ('{"type": "CharTokenizer"}', 'expected "chars" to be a str, got nothing'),
    ('{"type": "ByteBPE", "merges": 5, "pattern": "x"}', 'expected "merges" to be a list, got int'),
])
def test_from_json_names_what_it_expected(s, message):
    with pytest.raises(ValueError, match=message):
        tokenizers.from_json(s)
    with pytest.raises(TypeError, match="as a str, got NoneType"):
        tokenizers.from_json(None)
    with pytest.raises(ValueError, match="CharTokenizer"):
        tokenizers.CharTokenizer.from_json("null")
