"""BERT's WordPiece tokenizer, written out: basic tokenisation, then greedy longest-match-first sub-words.

Two stages, as in the BERT paper (Devlin et al., 2019, section 3) and its reference ``tokenization.py``:

1. **Basic tokenisation** (normalisation and pre-tokenisation) turns raw text into words:

   - clean: drop NUL, U+FFFD and control-like characters (Unicode categories Cc, Cf, Co and Cs; tab, newline
     and carriage return excepted; unassigned code points, Cn, are kept), and map every whitespace character
     to a space;
   - CJK: put spaces around every CJK Unified Ideograph, so each Chinese character becomes its own word
     (BERT has no word segmenter for Chinese);
   - strip accents: Unicode NFD, then drop non-spacing marks (category Mn), so "café" becomes "cafe";
   - lower-case, character by character;
   - split on whitespace, and split every punctuation character off as its own word (ASCII punctuation, which
     includes ``$ + < = > ^ ` |`` and ``~``, plus every Unicode category P*).

2. **WordPiece** splits each word greedily: take the longest prefix that is in the vocabulary, then the longest
   "##"-prefixed continuation of the rest, and so on. If some remainder has no match, or the word is longer than
   ``max_input_chars_per_word`` (100) characters, the whole word becomes ``[UNK]``.

The order of the normalisation steps (accents stripped before lower-casing) follows Hugging Face ``tokenizers``'
``BertNormalizer``, the reference these ids are tested against. Special tokens written literally in the text
(``"[SEP]"``, ``"[MASK]"``, ...) are kept as single tokens, as ``tokenizers`` does for its added tokens; the
text between them goes through the two stages above.
"""
import re
import unicodedata

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# CJK Unified Ideographs and their extensions, plus the compatibility ideographs: the ranges BERT treats as
# "Chinese characters". Hiragana, Katakana and Hangul are not in them, as in BERT.
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)

# The Unicode White_Space property (what ``tokenizers``, written in Rust, calls whitespace), minus the ones that
# are also control characters and are removed by cleaning first (U+000B, U+000C, U+0085).
_WHITESPACE = frozenset(
    "\t\n\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


def _is_whitespace(ch):
    return ch in _WHITESPACE


def _is_control(ch):
    """Categories Cc, Cf, Co, Cs, except tab, newline and carriage return, which count as whitespace."""
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs")


def _is_cjk(ch):
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def _is_punctuation(ch):
    """ASCII punctuation (``!`` to ``/``, ``:`` to ``@``, ``[`` to `````, ``{`` to ``~``) or any category P*."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def normalize(text):
    """Clean, space out CJK characters, strip accents and lower-case: BERT's normaliser, step by step."""
    cleaned = "".join(
        " " if _is_whitespace(ch) else ch
        for ch in text
        if not (ch == "\x00" or ch == "\ufffd" or _is_control(ch))
    )
    spaced = "".join(f" {ch} " if _is_cjk(ch) else ch for ch in cleaned)
    no_accents = "".join(ch for ch in unicodedata.normalize("NFD", spaced) if unicodedata.category(ch) != "Mn")
    return "".join(ch.lower() for ch in no_accents)


def pre_tokenize(text):
    """Split normalised text into words: on whitespace (dropped), and around each punctuation character (kept)."""
    words, current = [], []
    for ch in text:
        if _is_whitespace(ch) or _is_punctuation(ch):
            if current:
                words.append("".join(current))
                current = []
            if not _is_whitespace(ch):
                words.append(ch)
        else:
            current.append(ch)
    if current:
        words.append("".join(current))
    return words


class WordPiece:
    """A BERT WordPiece tokenizer over a fixed vocabulary (one token per line of ``vocab.txt``, id = line number).

    Parameters
    ----------
    vocab : list of str
        The tokens; ``vocab[i]`` has id ``i``. Must contain ``[CLS]``, ``[SEP]`` and ``[UNK]``.
    max_input_chars_per_word : int
        Longer words become ``[UNK]`` without being split (BERT uses 100).
    """

    def __init__(self, vocab, max_input_chars_per_word=100):
        self.vocab = list(vocab)
        self.token_to_id = {tok: i for i, tok in enumerate(self.vocab)}
        missing = [t for t in ("[CLS]", "[SEP]", "[UNK]") if t not in self.token_to_id]
        if missing:
            raise ValueError(f"vocab: expected the special tokens [CLS], [SEP] and [UNK], missing {missing}")
        self.max_input_chars_per_word = max_input_chars_per_word
        self.special_tokens = [t for t in SPECIAL_TOKENS if t in self.token_to_id]
        self.special_ids = frozenset(self.token_to_id[t] for t in self.special_tokens)
        self._special_re = re.compile("(" + "|".join(re.escape(t) for t in self.special_tokens) + ")")
        self.cls_id = self.token_to_id["[CLS]"]
        self.sep_id = self.token_to_id["[SEP]"]
        self.unk_id = self.token_to_id["[UNK]"]
        self.pad_id = self.token_to_id.get("[PAD]", 0)

    @classmethod
    def from_vocab(cls, path, max_input_chars_per_word=100):
        """Read ``vocab.txt`` (UTF-8, one token per line) into a tokenizer."""
        with open(path, encoding="utf-8") as f:
            vocab = [line.rstrip("\n") for line in f]
        return cls(vocab, max_input_chars_per_word)

    def word_to_pieces(self, word):
        """Greedy longest-match-first: ``"unaffable"`` -> ``["una", "##ffa", "##ble"]`` (vocab permitting).

        Returns ``["[UNK]"]`` if the word is too long or some remainder matches nothing.
        """
        if len(word) > self.max_input_chars_per_word:
            return ["[UNK]"]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.token_to_id:
                    break
                end -= 1
            if end == start:
                return ["[UNK]"]
            pieces.append(piece)
            start = end
        return pieces

    def tokenize(self, text):
        """Text -> WordPiece tokens (strings), without [CLS]/[SEP]."""
        if not isinstance(text, str):
            raise TypeError(f"text: expected str, got {type(text).__name__}")
        tokens = []
        for i, chunk in enumerate(self._special_re.split(text)):
            if i % 2 == 1:
                tokens.append(chunk)
                continue
            for word in pre_tokenize(normalize(chunk)):
                tokens.extend(self.word_to_pieces(word))
        return tokens

    def encode(self, text, add_special_tokens=True):
        """Text -> ids: ``[CLS] tokens [SEP]`` (or the bare tokens with ``add_special_tokens=False``).

        The empty string encodes to ``[CLS] [SEP]``.
        """
        ids = [self.token_to_id[t] for t in self.tokenize(text)]
        if add_special_tokens:
            ids = [self.cls_id] + ids + [self.sep_id]
        return ids

    def decode(self, ids, skip_special_tokens=True):
        """Ids -> text: "##" pieces join the previous token, other tokens are separated by one space.

        As Hugging Face's WordPiece decoder with ``cleanup=True``, a space before ``. ? ! ,`` and before the
        English clitics ``'s 'm 're 've n't`` is removed. Lower-casing and accent stripping cannot be undone.
        """
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.vocab):
                raise ValueError(f"ids: expected ids in [0, {len(self.vocab)}), got {i}")
            if skip_special_tokens and i in self.special_ids:
                continue
            tok = self.vocab[i]
            if out and tok.startswith("##"):
                piece = tok[2:]
            elif out:
                piece = " " + tok
            else:
                piece = tok
            out.append(_cleanup(piece))
        return "".join(out)


def _cleanup(piece):
    for dirty, clean in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                         (" 'm", "'m"), (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        piece = piece.replace(dirty, clean)
    return piece
