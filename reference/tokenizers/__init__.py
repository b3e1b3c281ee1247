"""Tokenizers: characters with byte fallback and byte-level BPE (trained from scratch), and BERT's WordPiece.

The WordPiece tokenizer (``wordpiece.py``) reads a pretrained vocabulary; the two trained ones below share an
interface.

Both have the same interface: ``Tok.train(text, ...)``, ``encode(str) -> list[int]``, ``decode(ids) -> str``,
``vocab_size``, ``to_json()`` / ``Tok.from_json(s)`` and ``save(path)`` / ``Tok.load(path)``. ``from_json``
below rebuilds either kind from its JSON (a checkpoint stores the tokenizer that way).
"""
from reference.tokenizers._jsonfile import parse_json
from reference.tokenizers.bpe import ByteBPE
from reference.tokenizers.char import CharTokenizer

__all__ = ["ByteBPE", "CharTokenizer", "from_json"]

_KINDS = {"ByteBPE": ByteBPE, "CharTokenizer": CharTokenizer}


def from_json(s):
    """The ``CharTokenizer`` or ``ByteBPE`` that ``to_json()`` wrote as ``s``."""
    kind = parse_json(s, tuple(_KINDS))["type"]
    return _KINDS[kind].from_json(s)
