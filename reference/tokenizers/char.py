"""A character-level tokenizer with byte fallback: every UTF-8 string round-trips, seen characters or not.

Ids
---
- ``0 .. n_chars - 1``: the characters seen in training, in code-point order (for the King James Bible:
  63 characters, newline included).
- ``n_chars .. n_chars + 255``: one id per byte value. A character that training never saw is encoded as the
  ids of its UTF-8 bytes, so ``decode(encode(s)) == s`` for any string ``s`` that UTF-8 can encode (any ``str``
  without lone surrogates). The model never sees these ids in the corpus; they only make the tokenizer total.

So ``vocab_size = n_chars + 256``. On the corpus, every validation character also occurs in the training
text, so the compression ratio is exactly 1 character per token.
"""
import json

from reference._checks import check_id_list
from reference.tokenizers._jsonfile import JSONFile, parse_json

N_BYTES = 256


class CharTokenizer(JSONFile):
    """Characters to ids and back.

    Parameters
    ----------
    chars : iterable of str
        Distinct single characters; the id of ``chars[i]`` is ``i`` (after sorting by code point).
    """

    def __init__(self, chars):
        chars = sorted(chars)
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ValueError("chars: expected distinct single characters")
        self.chars = chars
        self._stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def train(cls, text):
        """The tokenizer whose vocabulary is the set of characters of ``text``."""
        if not isinstance(text, str):
            raise TypeError(f"text: expected str, got {type(text).__name__}")
        return cls(set(text))

    @property
    def vocab_size(self):
        """Number of ids: the seen characters plus the 256 byte-fallback ids."""
        return len(self.chars) + N_BYTES

    def encode(self, text):
        """List of ids of ``text``: one per seen character, one per UTF-8 byte of an unseen one."""
        if not isinstance(text, str):
            raise TypeError(f"text: expected str, got {type(text).__name__}")
        stoi, base = self._stoi, len(self.chars)
        ids = []
        for c in text:
            i = stoi.get(c)
            if i is None:
                ids.extend(base + b for b in c.encode("utf-8"))
            else:
                ids.append(i)
        return ids

    def decode(self, ids):
        """The string of ``ids``. Runs of byte ids are decoded as UTF-8; a run that is not valid UTF-8 (which
        ``encode`` never produces, but a sampling model may) decodes with U+FFFD replacement characters."""
        base, n = len(self.chars), self.vocab_size
        out, run = [], bytearray()
        for i in check_id_list("ids", ids):
            if not 0 <= i < n:
                raise ValueError(f"ids: expected ids in [0, {n}), got {i}")
            if i >= base:
                run.append(i - base)
                continue
            if run:
                out.append(run.decode("utf-8", errors="replace"))
                run = bytearray()
            out.append(self.chars[i])
        if run:
            out.append(run.decode("utf-8", errors="replace"))
        return "".join(out)

    def to_json(self):
        """The tokenizer as a JSON string (what ``save`` writes and checkpoints store)."""
        return json.dumps({"type": "CharTokenizer", "chars": "".join(self.chars)})

    @classmethod
    def from_json(cls, s):
        """The tokenizer of a ``to_json`` string."""
        obj = parse_json(s, "CharTokenizer", {"chars": str})
        return cls(obj["chars"])
