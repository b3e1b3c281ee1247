"""reference/tokenizers/hf.py: our tokenizers as tokenizers' JSON give the same ids, on the corpus and on any script."""
import unicodedata

import numpy as np
import pytest
from tokenizers import Tokenizer

from reference.tokenizers import ByteBPE, CharTokenizer, hf
from reference.training import data

MANY_SCRIPTS = ("Héllo wörld ½ ² x₂ ① naïve café  \t\n\x1c\x1f tabs_and_under_scores don't I'll 3.14 १२३ 你好，世界！ "
                "こんにちは 안녕 Привет мир नमस्ते 🙂🚀 \u200b\u00a0end\u3000 e\u0301 ١٢٣")


@pytest.fixture(scope="module")
def split():
    return data.train_val_split(data.load_corpus())


@pytest.fixture(scope="module")
def bpe(split):
    return ByteBPE.train(split[0][:200_000], 512, progress=False)


@pytest.fixture(scope="module")
def char(split):
    return CharTokenizer.train(split[0])


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_the_validation_text_gets_the_same_ids_and_round_trips(kind, split, request):
    tok = request.getfixturevalue(kind)
    theirs = Tokenizer.from_str(hf.to_hf_json(tok))
    for text in (split[1], MANY_SCRIPTS):
        ids = tok.encode(text)
        assert theirs.encode(text).ids == ids
        assert theirs.decode(ids) == text == tok.decode(ids)


def test_pre_tokenisation_agrees_on_every_kind_of_character():
    # Python's \w, \d, \s and Oniguruma's differ (combining marks, superscripts, U+001C..U+001F): 2000 strings of
    # code points drawn from every assigned character below U+30000, mixed with ASCII words, spaces and digits
    tok = ByteBPE.train("the cat sat on the mat. Don't stop 123 ünïcödé 你好世界 " * 20, 400, progress=False)
    theirs = Tokenizer.from_str(hf.to_hf_json(tok))
    pool = np.array([c for c in range(0x30000) if not 0xD800 <= c <= 0xDFFF
                     and unicodedata.category(chr(c)) != "Cn"])
    rng = np.random.default_rng(0)
    for _ in range(2000):
        s = "".join(chr(c) for c in rng.choice(pool, size=12))
        s = s[:4] + " ab " + s[4:8] + "  \n" + s[8:] + "'s 12"
        assert theirs.encode(s).ids == tok.encode(s), [f"U+{ord(c):04X} {unicodedata.category(c)}" for c in s]


def test_bytes_to_unicode_is_gpt2s_table():
    table = hf.bytes_to_unicode()
    assert len(set(table.values())) == 256
    assert table[ord("A")] == "A" and table[ord(" ")] == "\u0120" and table[ord("\n")] == "\u010a"


def test_what_cannot_be_exported_is_refused():
    with pytest.raises(ValueError, match="custom pre-tokenisation pattern"):
        hf.to_hf_json(ByteBPE([], pattern=r"\S+|\s+"))
    with pytest.raises(TypeError, match="expected a ByteBPE or a CharTokenizer"):
        hf.to_hf_json("chars")


def test_two_ids_for_the_same_bytes_are_refused():
    # "abc" made twice, as (ab, c) and (a, bc): a tokenizers vocabulary cannot hold both
    tok = ByteBPE([(97, 98), (256, 99), (98, 99), (97, 258)])
    with pytest.raises(ValueError, match="ids 257 and 259 stand for the same bytes"):
        hf.to_hf_json(tok)
