"""Summarise a text from the command line: the k most central sentences, in their order.

    python -m reference.summarize FILE [--k N] [--method centroid|textrank]
    python -m reference.summarize - < FILE          # or no FILE: read standard input

The summariser is :mod:`reference.inference.summarizer` (chapter 8).
"""
import argparse
import sys

from reference.inference.summarizer import METHODS, summarize


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m reference.summarize",
                                     description="Extractive summary: the k most central sentences, in order, "
                                                 "scored with sentence embeddings from a NumPy BERT.")
    parser.add_argument("file", nargs="?", default="-", help="a UTF-8 text file; '-' or nothing reads stdin")
    parser.add_argument("--k", type=int, default=3, help="number of sentences to keep (default 3)")
    parser.add_argument("--method", choices=METHODS, default="textrank", help="centrality score (default textrank)")
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error(f"--k: expected a positive int, got {args.k}")
    if args.file == "-":
        text = sys.stdin.read()
    else:
        try:
            with open(args.file, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            parser.error(f"cannot read {args.file}: {e.strerror}")
    for sentence in summarize(text, k=args.k, method=args.method):
        print(sentence)
    return 0


if __name__ == "__main__":
    sys.exit(main())
