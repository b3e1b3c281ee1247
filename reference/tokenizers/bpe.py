"""Byte-level byte-pair encoding (BPE), trained from scratch in pure Python.

Ids ``0 .. 255`` are the byte values; merge ``k`` creates id ``256 + k`` from a pair of existing ids, so
``vocab_size = 256 + len(merges)``. Any string that UTF-8 can encode is a byte sequence, so every string
encodes (no unknown token) and ``decode(encode(s)) == s``.

Pre-tokenisation
----------------
Text is first cut into pre-tokens with GPT-2's pattern, written for the stdlib ``re`` module::

    's|'t|'re|'ve|'m|'ll|'d | ?letters+ | ?digits+ | ?other+ | spaces not before a non-space | spaces

where "letters" is ``[^\\W\\d_]`` (``re``'s Unicode letters, GPT-2's ``\\p{L}``), "digits" is ``\\d`` and
"other" is anything that is neither whitespace, letter nor digit. A space stays with the word that follows
it (" LORD"), so merges never cross a word boundary. The classes cover every character, so the pre-tokens
concatenate back to the text.

Training (Sennrich et al. 2016, as in GPT-2)
--------------------------------------------
1. Count the distinct pre-tokens: the 3.7 M-character training split has about 14 000, so training works
   on (word, count) pairs, never on the text again.
2. Count every adjacent pair of ids, weighted by word counts, and index which words hold each pair.
3. Repeat: take the most frequent pair (ties: the smallest pair of ids, so training is deterministic),
   give it a new id, rewrite only the words that hold it, and update the pair counts of those words
   (subtract their old pairs, add their new ones). A heap with lazy deletion finds the maximum.

Encoding applies, within each pre-token, the lowest-ranked (earliest learned) merge present, all its
occurrences left to right, until no learned pair is left; this gives the same segmentation as replaying
the merges in training order. Results are cached per pre-token.
"""
import heapq
import json
import re
from collections import Counter, defaultdict

from reference._checks import check_id_list
from reference.tokenizers._jsonfile import JSONFile, parse_json

N_BYTES = 256
PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""
_CACHE_MAX = 200_000


def _merge(word, pair, new_id):
    """``word`` with every occurrence of ``pair``, left to right and not overlapping, replaced by ``new_id``."""
    a, b = pair
    out, i, n = [], 0, len(word)
    while i < n:
        if i + 1 < n and word[i] == a and word[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def _pair_counts(word):
    return Counter(zip(word, word[1:]))


class ByteBPE(JSONFile):
    """A trained byte-level BPE.

    Parameters
    ----------
    merges : list of (int, int)
        ``merges[k]`` is the pair of ids that id ``256 + k`` stands for.
    pattern : str
        The pre-tokenisation regular expression.
    """

    def __init__(self, merges, pattern=PATTERN):
        merges = [tuple(int(i) for i in m) for m in merges]
        vocab = [bytes([b]) for b in range(N_BYTES)]
        for k, m in enumerate(merges):
            if len(m) != 2 or not all(0 <= i < N_BYTES + k for i in m):
                raise ValueError(f"merges[{k}]: expected a pair of ids below {N_BYTES + k}, got {m}")
            vocab.append(vocab[m[0]] + vocab[m[1]])
        self.merges = merges
        self.pattern = pattern
        self._vocab = vocab
        self._ranks = {m: k for k, m in enumerate(merges)}
        self._re = re.compile(pattern)
        self._cache = {}

    @classmethod
    def train(cls, text, vocab_size, progress=True, pattern=PATTERN):
        """Learn ``vocab_size - 256`` merges from ``text`` (fewer if the pairs run out first).

        Parameters
        ----------
        text : str
        vocab_size : int
            At least 256.
        progress : bool
            Show a tqdm progress bar over the merges.
        """
        if not isinstance(text, str):
            raise TypeError(f"text: expected str, got {type(text).__name__}")
        if not isinstance(vocab_size, int) or vocab_size < N_BYTES:
            raise ValueError(f"vocab_size: expected an integer >= {N_BYTES}, got {vocab_size!r}")
        word_counts = Counter(re.findall(pattern, text))
        words = [list(w.encode("utf-8")) for w in word_counts]
        freqs = list(word_counts.values())

        counts = defaultdict(int)          # pair -> occurrences in the text
        where = defaultdict(set)           # pair -> indices of the words that hold it (a superset, pruned lazily)
        for i, (w, f) in enumerate(zip(words, freqs)):
            for p in zip(w, w[1:]):
                counts[p] += f
                where[p].add(i)
        heap = [(-c, p) for p, c in counts.items()]
        heapq.heapify(heap)

        n_merges = vocab_size - N_BYTES
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=n_merges, desc="BPE merges", unit="merge")
        merges = []
        while len(merges) < n_merges and heap:
            neg, pair = heapq.heappop(heap)
            if counts.get(pair, 0) != -neg:            # stale entry: the count changed after it was pushed
                continue
            new_id = N_BYTES + len(merges)
            merges.append(pair)
            changed = set()
            for i in where.pop(pair):
                w, f = words[i], freqs[i]
                if len(w) < 2:
                    continue
                new = _merge(w, pair, new_id)
                if len(new) == len(w):                 # the index was stale: the pair is no longer here
                    continue
                delta = _pair_counts(new)
                delta.subtract(_pair_counts(w))
                for p, d in delta.items():
                    if d:
                        counts[p] += d * f
                        changed.add(p)
                        if d > 0:
                            where[p].add(i)
                words[i] = new
            del counts[pair]
            changed.discard(pair)
            for p in changed:
                if counts[p] > 0:
                    heapq.heappush(heap, (-counts[p], p))
                else:
                    del counts[p]
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return cls(merges, pattern)

    @property
    def vocab_size(self):
        """Number of ids: 256 bytes plus one per merge."""
        return N_BYTES + len(self.merges)

    def token_bytes(self, i):
        """The bytes that id ``i`` stands for."""
        return self._vocab[i]

    def pretokenize(self, text):
        """The pre-tokens of ``text``; they concatenate back to ``text``."""
        return self._re.findall(text)

    def _encode_word(self, word):
        ids = list(word)
        ranks = self._ranks
        while len(ids) >= 2:
            best = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, len(ranks)))
            if best not in ranks:
                break
            ids = _merge(ids, best, N_BYTES + ranks[best])
        return ids

    def encode(self, text):
        """List of ids of ``text``."""
        if not isinstance(text, str):
            raise TypeError(f"text: expected str, got {type(text).__name__}")
        cache = self._cache
        if len(cache) > _CACHE_MAX:
            cache.clear()
        ids = []
        for piece in self._re.findall(text):
            toks = cache.get(piece)
            if toks is None:
                toks = self._encode_word(piece.encode("utf-8"))
                cache[piece] = toks
            ids.extend(toks)
        return ids

    def decode(self, ids):
        """The string of ``ids``. Bytes that are not valid UTF-8 (which ``encode`` never produces, but a
        sampling model may) decode to U+FFFD replacement characters."""
        vocab, n = self._vocab, len(self._vocab)
        parts = []
        for i in check_id_list("ids", ids):
            if not 0 <= i < n:
                raise ValueError(f"ids: expected ids in [0, {n}), got {i}")
            parts.append(vocab[i])
        return b"".join(parts).decode("utf-8", errors="replace")

    def to_json(self):
        """The tokenizer as a JSON string (what ``save`` writes and checkpoints store)."""
        return json.dumps({"type": "ByteBPE", "pattern": self.pattern, "merges": [list(m) for m in self.merges]})

    @classmethod
    def from_json(cls, s):
        """The tokenizer of a ``to_json`` string."""
        obj = parse_json(s, "ByteBPE", {"merges": list, "pattern": str})
        return cls(obj["merges"], obj["pattern"])
