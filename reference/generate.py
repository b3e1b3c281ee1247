"""Continue a prompt with a trained model: ``python -m reference.generate`` (also ``lm-primer-generate``).

    python -m reference.generate runs/small/checkpoint.npz --prompt "In the beginning" --max-new-tokens 200
    python -m reference.generate runs/small/checkpoint.npz --prompt "And God said" --temperature 0.8 --top-k 20
    python -m reference.generate runs/small/checkpoint.npz --prompt "Jesus answered" --beam-width 4
    echo "In the beginning" | python -m reference.generate runs/small/checkpoint.npz --prompt -

Loads a checkpoint of ``python -m reference.train`` (its tokenizer travels with it), encodes the prompt, and decodes
with the KV cache (``reference/inference/decoding.py``; ``--no-cache`` recomputes the whole sequence at every token,
the slow baseline that gives the same tokens). One sample is streamed to standard output as its tokens come;
several samples (``--num-samples``) or beam search hypotheses are printed when done, each after a ``=== ... ===``
line. The prompt is printed before its continuation. Standard error gets the speed (new tokens per second and, when
sampling, the time to the first token, which includes the prompt's forward pass) and, when sampling without
``--seed``, the seed that reproduces the output.

Sampling is ``--temperature`` (1 by default; 0 is greedy), then ``--top-k``, then ``--top-p``. Beam search
(``--beam-width``) is deterministic and takes no sampling settings. ``--prompt -`` reads the prompt from standard
input (UTF-8; one final newline, as ``echo`` adds, is dropped).

Every mistake is one line on standard error and exit status 2: a missing file or one that is not a training
checkpoint, an empty prompt, characters the model never saw in training, a prompt longer than the model's
context, and sampling settings that are not finite or out of range.
"""
import argparse
import math
import secrets
import sys
import time
from pathlib import Path

from reference.inference import decoding
from reference.tokenizers import CharTokenizer

PROG = "python -m reference.generate"
DEFAULT_MAX_NEW = 200


class UsageError(ValueError):
    """A setting or input the command refuses, before any generation."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """A bad flag is one line too (argparse would print the usage first)."""
        self.exit(2, f"{PROG}: error: {message} (see --help)\n")


def parse_args(argv=None):
    ap = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path, help="a checkpoint of python -m reference.train")
    ap.add_argument("--prompt", required=True, help="the text to continue; '-' reads it from standard input")
    ap.add_argument("--max-new-tokens", type=int,
                    help=f"tokens to generate (default: {DEFAULT_MAX_NEW}, or what the context has room for)")
    ap.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default 1)")
    ap.add_argument("--top-k", type=int, help="sample among the k most likely tokens")
    ap.add_argument("--top-p", type=float, help="sample among the most likely tokens of total probability p")
    ap.add_argument("--beam-width", type=int, help="beam search with this many beams instead of sampling")
    ap.add_argument("--length-penalty", type=float, default=1.0, help="beam search: score / length**alpha")
    ap.add_argument("--seed", type=int, help="seed of the sampler (default: a random one, printed)")
    ap.add_argument("--num-samples", type=int, default=1, help="samples (or best beams) to print (default 1)")
    ap.add_argument("--no-cache", action="store_true", help="recompute the whole sequence at every token")
    return ap.parse_args(argv)


def read_prompt(prompt):
    if prompt != "-":
        return prompt
    data = sys.stdin.buffer.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"the prompt on standard input is not valid UTF-8: byte(s) {data[e.start:e.end].hex(' ')} "
                         f"at offset {e.start}") from None
    return text[:-1] if text.endswith("\n") else text


def encode_prompt(tokenizer, text, block_size):
    """The prompt's ids, or a UsageError saying why the model cannot continue it."""
    if not text:
        raise UsageError("--prompt: expected a non-empty prompt (the model needs a token to continue from)")
    try:
        ids = tokenizer.encode(text)
    except UnicodeEncodeError as e:
        raise UsageError(f"--prompt: character {e.object[e.start]!r} at position {e.start} cannot be encoded "
                         f"({e.reason})") from None
    if isinstance(tokenizer, CharTokenizer):
        unseen = sorted({c for c in text if c not in tokenizer.chars})
        if unseen:
            shown = ", ".join(repr(c) for c in unseen[:10]) + (", ..." if len(unseen) > 10 else "")
            raise UsageError(f"--prompt: the model never saw {shown} in training; its {len(tokenizer.chars)} "
                             f"characters are {''.join(tokenizer.chars)!r}")
    if len(ids) > block_size:
        raise UsageError(f"--prompt: {len(ids)} tokens, longer than the model's context of {block_size} tokens")
    return ids


def check_settings(args, prompt_len, block_size):
    """Every setting, before any work. Returns the number of new tokens."""
    room = block_size - prompt_len + 1            # the last new token is never fed back
    n = args.max_new_tokens
    if n is None:
        n = min(DEFAULT_MAX_NEW, room)
    elif n < 1:
        raise UsageError(f"--max-new-tokens: expected a positive integer, got {n}")
    elif n > room:
        raise UsageError(f"--max-new-tokens {n}: a prompt of {prompt_len} tokens leaves room for at most {room} new "
                         f"tokens in the model's context of {block_size}")
    for flag in ("num_samples", "beam_width"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')}: expected a positive integer, got {value}")
    if args.seed is not None and args.seed < 0:
        raise UsageError(f"--seed: expected an integer >= 0, got {args.seed}")
    if args.beam_width is not None:
        sampling = [f for f, v in (("--temperature", args.temperature != 1.0), ("--top-k", args.top_k is not None),
                                   ("--top-p", args.top_p is not None), ("--seed", args.seed is not None),
                                   ("--no-cache", args.no_cache)) if v]
        if sampling:
            raise UsageError(f"--beam-width: beam search is deterministic and always uses the cache; it takes no "
                             f"{', '.join(sampling)}")
        if not math.isfinite(args.length_penalty):
            raise UsageError(f"--length-penalty: expected a finite number, got {args.length_penalty}")
        if args.num_samples > args.beam_width:
            raise UsageError(f"--num-samples {args.num_samples}: beam search keeps at most --beam-width "
                             f"{args.beam_width} hypotheses")
    else:
        try:
            decoding.check_sampling(args.temperature, args.top_k, args.top_p)
        except (ValueError, TypeError) as err:
            raise UsageError("--" + str(err).replace("_", "-", 1)) from None
    return n


class Streamer:
    """Writes a sample's text as its tokens arrive. A character whose UTF-8 bytes span several tokens (byte
    fallback, byte-level BPE) is written once all its bytes have come: the decoded text is held back while it ends
    in a replacement character."""

    def __init__(self, tokenizer, out):
        self.tokenizer, self.out = tokenizer, out
        self.ids, self.written = [], 0

    def push(self, token):
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        ready = len(text.rstrip("\ufffd"))
        self._write(text[self.written:ready])

    def close(self):
        self._write(self.tokenizer.decode(self.ids)[self.written:])

    def _write(self, piece):
        if piece:
            self.out.write(piece)
            self.out.flush()
            self.written += len(piece)


def run(args, model, out=None, err=None):
    """Generate as ``args`` say with ``model`` (a ``reference.training.trained.Trained``); returns the texts.
    Writes to ``out`` and ``err`` (default: standard output and error)."""
    out, err = out or sys.stdout, err or sys.stderr
    tok, params, config = model.tokenizer, model.params, model.config
    prompt = read_prompt(args.prompt)
    ids = encode_prompt(tok, prompt, config.block_size)
    n = check_settings(args, len(ids), config.block_size)
    t0 = time.perf_counter()
    first = []                                    # when the first token came (sampling)
    if args.beam_width is not None:
        hyps = decoding.beam_search(params, config, ids, args.beam_width, n, length_penalty=args.length_penalty)
        texts = []
        for i, (tokens, score) in enumerate(hyps[:args.num_samples]):
            out.write(f"=== beam {i + 1} of {len(hyps)}, score {score:.4f} ===\n")
            texts.append(prompt + tok.decode(tokens))
            out.write(texts[-1] + "\n")
        n_tokens = sum(len(t) for t, _ in hyps[:args.num_samples])
    else:
        seed = args.seed if args.seed is not None else secrets.randbelow(2**32)
        stream = Streamer(tok, out) if args.num_samples == 1 else None

        def on_step(received):
            if not first:
                first.append(time.perf_counter())
            if stream is not None:
                stream.push(received[0])

        if stream is not None:
            out.write(prompt)
            out.flush()
        new = decoding.generate(params, config, [ids] * args.num_samples, n, temperature=args.temperature,
                                top_k=args.top_k, top_p=args.top_p, stop_tokens=None, rng=seed,
                                use_cache=not args.no_cache, on_step=on_step)
        texts = [prompt + tok.decode(t) for t in new]
        if stream is not None:
            stream.close()
            out.write("\n")
        else:
            for i, text in enumerate(texts):
                out.write(f"=== sample {i + 1} of {len(texts)} ===\n{text}\n")
        n_tokens = sum(len(t) for t in new)
        if args.seed is None and args.temperature != 0:
            err.write(f"{PROG}: seed {seed} (pass --seed {seed} to get these samples again)\n")
    dt = time.perf_counter() - t0
    how = ("beam search" if args.beam_width else
           f"{'no cache' if args.no_cache else 'KV cache'}; first token after {1000 * (first[0] - t0):.0f} ms")
    err.write(f"{PROG}: {n_tokens} new tokens in {dt:.2f} s, {n_tokens / dt:,.1f} tokens/s ({how})\n")
    out.flush()
    return texts


def main(argv=None):
    """The ``lm-primer-generate`` command."""
    from reference.training import checkpoint, trained

    args = parse_args(argv)
    try:
        model = trained.load(args.checkpoint)
        run(args, model)
    except FileNotFoundError as e:
        print(f"{PROG}: error: cannot read {args.checkpoint}: {e.strerror}", file=sys.stderr)
        raise SystemExit(2) from None
    except (UsageError, checkpoint.CheckpointError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
