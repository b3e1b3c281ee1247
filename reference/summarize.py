"""Summarise a text from the command line: the k most central sentences, in their order.

    python -m reference.summarize FILE [--k N] [--method centroid|textrank] [--scorer auto|minilm|char-ngram]
    python -m reference.summarize - < FILE          # or no FILE: read standard input
    python -m reference.summarize notes.txt --encoding gb18030

The summariser is :mod:`reference.inference.summarizer` (chapter 8). The summary goes to standard output, one
sentence per line; which scorer chose it (MiniLM, or character n-grams for a language MiniLM does not know), any
warning, and the progress bar go to standard error.

A file and standard input are read the same way: as bytes, decoded with ``--encoding`` (default UTF-8; a UTF-8
byte-order mark is dropped). Bytes that are not valid in that encoding stop the command with a one-line error
that says where, rather than a traceback or a silent replacement.
"""
import argparse
import codecs
import sys
import warnings

from reference.inference.summarizer import METHODS, SCORERS, summarize_detailed

PROG = "python -m reference.summarize"


def fail(message):
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def read_text(source, encoding):
    """The text of ``source`` (a path, or '-' for standard input) decoded with ``encoding``; one-line errors."""
    name = "standard input" if source == "-" else source
    try:
        codecs.lookup(encoding)
    except LookupError:
        fail(f"--encoding {encoding}: unknown encoding (examples: utf-8, gb18030, big5, latin-1)")
    try:
        if source == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(source, "rb") as f:
                data = f.read()
    except OSError as e:
        fail(f"cannot read {name}: {e.strerror}")
    if codecs.lookup(encoding).name == "utf-8":
        encoding = "utf-8-sig"                      # the same decoder, and a byte-order mark is not text
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        bad = data[e.start:e.end]
        fail(f"{name} is not valid {e.encoding.replace('-sig', '')}: byte(s) {bad.hex(' ')} at offset {e.start} "
             f"({e.reason}); give the file's encoding with --encoding, e.g. --encoding gb18030")


def main(argv=None):
    parser = argparse.ArgumentParser(prog=PROG,
                                     description="Extractive summary: the k most central sentences, in order, "
                                                 "scored with sentence embeddings from a NumPy BERT.")
    parser.add_argument("file", nargs="?", default="-", help="a text file; '-' or nothing reads stdin")
    parser.add_argument("--k", type=int, default=3, help="number of sentences to keep (default 3)")
    parser.add_argument("--method", choices=METHODS, default="textrank", help="centrality score (default textrank)")
    parser.add_argument("--scorer", choices=SCORERS, default="auto",
                        help="auto (default): MiniLM, or character n-grams when MiniLM's vocabulary does not know "
                             "the language")
    parser.add_argument("--encoding", default="utf-8", help="the text's encoding (default utf-8)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.k < 1:
        fail(f"--k: expected a positive int, got {args.k}")
    text = read_text(args.file, args.encoding)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = summarize_detailed(text, k=args.k, method=args.method, scorer=args.scorer,
                                    progress=not args.no_progress and sys.stderr.isatty())
    for w in caught:
        print(f"{PROG}: warning: {w.message}", file=sys.stderr)
    for sentence in result.sentences:
        print(sentence)
    unk = "" if result.unk_rate != result.unk_rate else f", {result.unk_rate:.1%} [UNK] tokens"
    print(f"{PROG}: {len(result.sentences)} of {result.n_sentences} sentences, chosen by {result.scorer}{unk}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
