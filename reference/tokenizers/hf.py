r"""Our tokenizers as Hugging Face ``tokenizers`` JSON (``tokenizer.json``), giving the same ids.

``reference/export.py`` writes this file beside the model, so that ``tokenizers.Tokenizer.from_file`` and
``transformers.AutoTokenizer`` read the tokenizer the model was trained with.

Byte-level BPE (:class:`~reference.tokenizers.bpe.ByteBPE`) maps onto the library's BPE model with a byte-level
alphabet, as GPT-2's tokenizer does:

- pre-tokenisation: the same regular expression, then the ``ByteLevel`` step that writes each byte as one printable
  character (GPT-2's table, :func:`bytes_to_unicode`). Python's ``re`` and the library's Oniguruma disagree on what
  ``\w``, ``\d`` and ``\s`` mean (combining marks, superscript digits, U+001C-U+001F), so the pattern is rewritten
  with explicit classes that mean exactly what Python's do: letters are ``[\p{L}\p{Nl}\p{No}]`` (what
  ``[^\W\d_]`` matches, checked over every code point), digits ``\p{Nd}``, whitespace the 29 characters for which
  ``str.isspace()`` holds;
- the model: one vocabulary entry per id (the bytes of the id, written with the same table) and our merges in
  training order, which the library applies lowest rank first, as :meth:`ByteBPE.encode` does.

Characters with byte fallback (:class:`~reference.tokenizers.char.CharTokenizer`) map onto a BPE model *without
merges* and with ``byte_fallback=True`` (the mechanism of Llama's tokenizer): a character in the vocabulary is its
id; any other character becomes the ids of the tokens ``<0x00>`` ... ``<0xFF>`` of its UTF-8 bytes, which we place
at our byte ids. No pre-tokeniser, no normaliser: the text is taken as it is. The decoder turns byte tokens back
into bytes (``ByteFallback``) and joins everything (``Fuse``).

Both give our ids on every string, tested on the corpus's validation text and on text in many scripts. Decoding
agrees on every sequence ``encode`` produces. On byte sequences that are not valid UTF-8 (which only a sampling
model produces) the character tokenizer's decoders differ: ours writes one U+FFFD per invalid sequence, the
library's ``ByteFallback`` one per byte.
"""
import json

from reference.tokenizers.bpe import PATTERN, ByteBPE
from reference.tokenizers.char import CharTokenizer

# Python's \s, as a character class Oniguruma reads the same way: every character for which str.isspace() holds
_WHITESPACE = "".join(f"\\x{{{c:04X}}}" for c in range(0x3001) if chr(c).isspace())
_LETTER = r"\p{L}\p{Nl}\p{No}"                 # [^\W\d_] in Python's re: letters and non-decimal numerals
ONIG_PATTERN = (rf"'(?:[sdmt]|ll|ve|re)| ?[{_LETTER}]+| ?\p{{Nd}}+| ?[^{_WHITESPACE}\p{{L}}\p{{N}}]+"
                rf"|[{_WHITESPACE}]+(?![^{_WHITESPACE}])|[{_WHITESPACE}]+")


def bytes_to_unicode():
    """GPT-2's table byte -> printable character: printable Latin-1 bytes stand for themselves, the other 68 bytes
    (controls, space, ...) get the characters from U+0100 on, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def to_hf_json(tokenizer):
    """The ``tokenizer.json`` text of a :class:`ByteBPE` or :class:`CharTokenizer` (needs the ``tokenizers``
    package)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    if isinstance(tokenizer, ByteBPE):
        if tokenizer.pattern != PATTERN:
            raise ValueError("to_hf_json: this ByteBPE has a custom pre-tokenisation pattern, which has no known "
                             "Oniguruma equivalent; only the default PATTERN is translated")
        table = bytes_to_unicode()
        words = ["".join(table[b] for b in tokenizer.token_bytes(i)) for i in range(tokenizer.vocab_size)]
        _refuse_duplicates(words)
        vocab = {w: i for i, w in enumerate(words)}
        merges = [(words[a], words[b]) for a, b in tokenizer.merges]
        hf = Tokenizer(models.BPE(vocab=vocab, merges=merges))
        hf.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(ONIG_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        hf.decoder = decoders.ByteLevel()
    elif isinstance(tokenizer, CharTokenizer):
        base = len(tokenizer.chars)
        vocab = {c: i for i, c in enumerate(tokenizer.chars)}
        vocab.update({f"<0x{b:02X}>": base + b for b in range(256)})
        hf = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True))
        hf.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    else:
        raise TypeError(f"to_hf_json: expected a ByteBPE or a CharTokenizer, got {type(tokenizer).__name__}")
    return hf.to_str()


def tokenizer_config(model_max_length):
    """``tokenizer_config.json``: the generic fast tokenizer over ``tokenizer.json``, no special tokens, no clean-up
    of spaces before punctuation (which would change the decoded text)."""
    return json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model_max_length,
                       "clean_up_tokenization_spaces": False}, indent=2) + "\n"


def _refuse_duplicates(words):
    seen = {}
    for i, w in enumerate(words):
        if w in seen:
            raise ValueError(f"to_hf_json: ids {seen[w]} and {i} stand for the same bytes; a tokenizers vocabulary "
                             f"maps each string to one id")
        seen[w] = i
