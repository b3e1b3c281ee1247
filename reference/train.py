"""Train the GPT of ``reference/models/gpt.py`` on the King James Bible, in NumPy, with the hand-written backward pass.

    python -m reference.train                       # the "small" config: char-level, a few minutes on 2 cores
    python -m reference.train --config medium       # byte-level BPE, bigger model
    python -m reference.train --config llama-small  # the Llama block (RMSNorm, RoPE, SwiGLU, GQA): chapter 12
    python -m reference.train --steps 3000 --lr 1e-3 --out runs/mine
    python -m reference.train --resume runs/small/checkpoint.npz    # continue, bit-identically

The loop is the material's §2.1 in order: data (corpus, split, tokenizer, random windows), initialisation
(``gpt.init_params``), gradient descent (``gpt.loss_and_grads``, global-norm clipping, AdamW with a warm-up +
cosine schedule) and iteration (evaluate, checkpoint, repeat). Every ``--eval-interval`` steps it measures the
validation loss and writes a checkpoint (params, optimizer state, step, run config, tokenizer, RNG state, loss
history). At the end it writes the loss curve (``--figure``), a JSON log in ``--out`` and prints a few samples.

Resuming restores all of that state, so ``--resume`` continues exactly as the uninterrupted run would have:
the same batches, the same updates, the same bits. ``--stop-at K`` ends a run after step K (with a checkpoint)
while keeping the schedule of ``--steps``; it is how a long run is split across sessions, and how the test
interrupts one. Ctrl-C (SIGINT) or SIGTERM does the same at the end of the current step: checkpoint, log, the
command that resumes, and exit status 130 or 143.

Nothing is lost and nothing fails late (``reference/training/run_dir.py``): before the first step the command
checks every setting, the paths it will write (``--out``, ``--figure``) and the memory the run needs; it refuses a
fresh run into a folder that holds a checkpoint (``--resume`` it, or ``--overwrite``), and it locks the folder so
that a second run into it is refused while the first one runs. Every refusal is one line and exit status 2.

Training at scale (``reference/training/``: ``precision``, ``data_parallel``, ``zero``, ``recompute``,
``tensor_parallel``, ``distributed``): ``--precision fp16|bf16`` computes in 16 bits on float32 master weights;
``--grad-accum K`` makes one update of K batches; ``--recompute`` keeps only each block's input and recomputes the
block in the backward pass; under ``torchrun`` the ranks share each batch (data parallel, ``--batch-size`` stays the
global batch), ``--zero 1`` shards the AdamW state over them, and ``--tp N`` splits every block's heads and hidden
units over N ranks (the world is then W/N data-parallel replicas of N ranks); rank 0 alone writes, and checkpoints
hold the full model whatever the split. After ``torchrun --max-restarts`` restarts the group, the ranks resume from
the run's last checkpoint::

    torchrun --standalone --nproc_per_node=2 -m reference.train --config tiny --zero 1
    torchrun --standalone --nproc_per_node=4 -m reference.train --config tiny --tp 2 --recompute

On a machine shared with other jobs, run with ``OPENBLAS_NUM_THREADS=1``: multi-threaded BLAS threads that wait
for each other on busy cores made a step of the small config 10x slower than one thread did.
"""
import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from reference import tokenizers
from reference.inference import decoding
from reference.models import gpt
from reference.ops import cross_entropy
from reference.training import (blockwise, checkpoint, data, data_parallel, distributed, memory, optim, precision,
                                 recompute, run_dir, tensor_parallel, trained, zero)

# Named configurations. "small" is the default: char-level, 850 k parameters, 800 steps of 16 x 128 characters.
# Measured: validation loss 1.72 nats per character, in 15 min on 2 CPU cores that 5-10 other jobs were sharing
# (1,900 tokens/s; a step took 0.4 to 1.3 s as the load varied). "tiny" is for smoke tests.
CONFIGS = {
    "tiny": dict(tokenizer="char", d_model=32, n_layer=2, n_head=4, block_size=32, batch_size=8,
                 lr=3e-3, steps=50, warmup=5, eval_interval=25, eval_batches=4),
    "small": dict(tokenizer="char", d_model=128, n_layer=4, n_head=4, block_size=128, batch_size=16,
                  lr=2e-3, steps=800, warmup=50, eval_interval=100, eval_batches=20),
    "medium": dict(tokenizer="bpe", bpe_vocab=2048, d_model=256, n_layer=6, n_head=8, block_size=256,
                   batch_size=16, lr=1e-3, steps=5000, warmup=200, eval_interval=250, eval_batches=40),
    "large": dict(tokenizer="bpe", bpe_vocab=4096, d_model=512, n_layer=8, n_head=8, block_size=256,
                  batch_size=32, lr=6e-4, steps=20000, warmup=500, eval_interval=500, eval_batches=40),
}
# Today's decoder (reference/models/gpt.py, chapter 12): "tiny" and "small" with the Llama block (RMSNorm, RoPE,
# SwiGLU of about the MLP's parameters, 2 K/V heads for 4 query heads, no biases, an untied head), and a Mixtral
# version of "tiny" (4 SwiGLU experts of half the width, 2 per token: the dense model's active parameters).
LLAMA = dict(norm="rmsnorm", positional="rope", ffn="swiglu", n_kv_head=2, bias=False, tie_embeddings=False)
CONFIGS["llama-tiny"] = dict(CONFIGS["tiny"], **LLAMA, d_ff=88)
CONFIGS["llama-small"] = dict(CONFIGS["small"], **LLAMA, d_ff=344)
CONFIGS["mixtral-tiny"] = dict(CONFIGS["tiny"], **LLAMA, d_ff=44, n_expert=4, top_k=2, aux_loss_coef=0.02)
# Shared by every config (GPT-2 / nanoGPT practice).
DEFAULTS = dict(bpe_vocab=1024, min_lr_ratio=0.1, weight_decay=0.1, betas=(0.9, 0.95), grad_clip=1.0, seed=0,
                positional="learned", precision="fp32", grad_accum=1)
SAMPLE_PROMPTS = ("And God said", "In the beginning", "Jesus answered")
CHECKPOINT = "checkpoint.npz"
FIGURE_NAME = "train_loss.png"


class ConfigError(ValueError):
    """A run configuration that cannot train; raised before any training starts."""


# ---------------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------------

def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="lm-primer-train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None, choices=sorted(CONFIGS), help="named configuration (default: small)")
    ap.add_argument("--tokenizer", choices=("char", "bpe"))
    ap.add_argument("--d-model", type=int)
    ap.add_argument("--n-layer", type=int)
    ap.add_argument("--n-head", type=int)
    ap.add_argument("--block-size", type=int, help="context length T (also the positional table's size)")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--lr", type=float, help="peak learning rate")
    ap.add_argument("--steps", type=int, help="total optimizer steps (the schedule's length)")
    ap.add_argument("--eval-interval", type=int, help="steps between validation and checkpoint")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--stop-at", type=int, help="stop after this step (checkpointed), keeping the schedule of --steps")
    ap.add_argument("--out", type=Path, help="run directory (default runs/<config>)")
    ap.add_argument("--resume", type=Path, help="checkpoint to continue from")
    ap.add_argument("--overwrite", action="store_true",
                    help="start a fresh run even if --out holds a checkpoint (which it then replaces)")
    ap.add_argument("--figure", default="figures/train_loss.png",
                    help=f"loss-curve image (.png, .pdf, .svg, ...), or a folder to write {FIGURE_NAME} in")
    ap.add_argument("--precision", choices=precision.PRECISIONS,
                    help="fp32, or fp16/bf16 compute on float32 master weights (default fp32)")
    ap.add_argument("--grad-accum", type=int, help="micro-batches of --batch-size per update (default 1)")
    ap.add_argument("--zero", type=int, choices=(0, 1), default=0,
                    help="1: shard the AdamW state over the data-parallel ranks (ZeRO stage 1)")
    ap.add_argument("--tp", type=int, default=1,
                    help="tensor-parallel ranks per model (Megatron): heads and FFN units split over them (default 1)")
    ap.add_argument("--recompute", action="store_true",
                    help="keep only each block's input; recompute the block in the backward pass (less memory)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar (logs, tests)")
    return ap.parse_args(argv)


def _flag_values(args):
    """The run settings given on the command line (None = not given)."""
    return {"tokenizer": args.tokenizer, "d_model": args.d_model, "n_layer": args.n_layer, "n_head": args.n_head,
            "block_size": args.block_size, "batch_size": args.batch_size, "lr": args.lr, "steps": args.steps,
            "eval_interval": args.eval_interval, "seed": args.seed, "precision": args.precision,
            "grad_accum": args.grad_accum}


def make_run(args):
    """The run configuration (a JSON-able dict) of a fresh run: named config, then flags on top."""
    name = args.config or "small"
    run = dict(DEFAULTS, **CONFIGS[name], config=name)
    run.update({k: v for k, v in _flag_values(args).items() if v is not None})
    run["betas"] = list(run["betas"])
    return run


def resumed_run(args, saved_run):
    """The run configuration of a resumed run: the checkpoint's; only --steps and --eval-interval may change."""
    run = {"precision": "fp32", "grad_accum": 1, **saved_run}      # checkpoints older than these two settings
    if args.config is not None and args.config != run["config"]:
        raise ConfigError(f"--config {args.config} differs from the checkpoint's {run['config']}")
    for key, value in _flag_values(args).items():
        if value is None or value == run.get(key):
            continue
        if key == "block_size" and value > run["block_size"]:
            raise ConfigError(f"--block-size {value} is larger than the checkpoint's positional table "
                              f"({run['block_size']} rows)")
        if key not in ("steps", "eval_interval"):
            raise ConfigError(f"--{key.replace('_', '-')} {value} differs from the checkpoint's {run[key]}; "
                              f"a resumed run keeps its configuration (only --steps and --eval-interval may change)")
        run[key] = value
    return run


def model_config(run, vocab_size):
    return trained.gpt_config(run, vocab_size)


def validate(run, tp=1, recompute=False):
    """Every check that needs no data: raises ConfigError naming the bad setting (``tp``, ``recompute``: the
    ``--tp`` and ``--recompute`` flags)."""
    for key in ("d_model", "n_layer", "n_head", "block_size", "batch_size", "steps", "eval_interval", "grad_accum"):
        if not isinstance(run[key], int) or run[key] < 1:
            raise ConfigError(f"{key.replace('_', '-')}: expected a positive integer, got {run[key]!r}")
    if not (math.isfinite(run["lr"]) and run["lr"] > 0):
        raise ConfigError(f"lr: the learning rate must be a positive number, got {run['lr']!r}")
    if not isinstance(run["seed"], int) or run["seed"] < 0:
        raise ConfigError(f"seed: expected an integer >= 0, got {run['seed']!r}")
    if run["warmup"] > run["steps"]:           # a run shorter than its config's warm-up warms up over all of it
        run["warmup"] = run["steps"]
    world = distributed.world_size()
    if not isinstance(tp, int) or tp < 1 or world % tp:
        raise ConfigError(f"--tp {tp}: the world of {world} rank(s) is not a multiple of it; launch a multiple of "
                          f"{tp} ranks (torchrun --nproc_per_node={max(tp, 1)} ...)")
    try:
        config = model_config(run, vocab_size=1)
        if tp > 1:
            tensor_parallel.check(config, tp)
        if recompute:
            blockwise.require_gpt2(config, "--recompute")
        data_parallel.check_batch(run["batch_size"], world // tp)
    except ValueError as err:
        raise ConfigError(str(err)) from err


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------

def build_data(run, tokenizer=None, progress=True):
    """Load the corpus, split it, train the tokenizer on the training text (unless given) and encode both splits.

    Returns
    -------
    tokenizer, train_ids (N_train,) int32, val_ids (N_val,) int32
    """
    text = data.load_corpus()
    train_text, val_text = data.train_val_split(text)
    if tokenizer is None:
        if run["tokenizer"] == "char":
            tokenizer = tokenizers.CharTokenizer.train(train_text)
        else:
            tokenizer = tokenizers.ByteBPE.train(train_text, run["bpe_vocab"], progress=progress)
    train_ids = np.array(tokenizer.encode(train_text), dtype=np.int32)   # (N_train,)
    val_ids = np.array(tokenizer.encode(val_text), dtype=np.int32)       # (N_val,)
    for name, ids in (("training", train_ids), ("validation", val_ids)):
        if ids.size < run["block_size"] + 1:
            raise ConfigError(f"block-size {run['block_size']}: the {name} split has only {ids.size} tokens")
    return tokenizer, train_ids, val_ids


# ---------------------------------------------------------------------------------------------------------------
# Evaluation, sampling, plotting
# ---------------------------------------------------------------------------------------------------------------

def evaluate(params, config, val_ids, run):
    """Mean loss over ``eval_batches`` validation windows; the same windows at every evaluation (fixed seed), so
    the curve compares like with like, and the training RNG is untouched (which keeps --resume exact)."""
    rng = np.random.default_rng(run["seed"] + 1)
    losses = []
    for _ in range(run["eval_batches"]):
        x, y = data.get_batch(val_ids, run["batch_size"], run["block_size"], rng)
        logits, _ = gpt.forward(params, config, x)
        losses.append(float(cross_entropy.forward(logits, y)[0]))
    return float(np.mean(losses))


def samples(params, config, tokenizer, run, temperature=0.8):
    """One verse-like line per prompt: temperature sampling until a newline or the context is full."""
    stop = tokenizer.encode("\n")
    prompts = [tokenizer.encode(p) for p in SAMPLE_PROMPTS]
    max_len = max(len(p) for p in prompts)
    new = decoding.generate(params, config, prompts, max_new_tokens=config.block_size - max_len + 1,
                            temperature=temperature, stop_tokens=stop[:1], rng=run["seed"])
    return [tokenizer.decode(p + n).rstrip("\n") for p, n in zip(prompts, new)]


def plot_losses(history, path, title):
    """Train loss per step (and its running mean) with the validation points, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([s for s, *_ in history["train"]])
    loss = np.array([l for _, l, *_ in history["train"]])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, loss, color="tab:blue", alpha=0.3, lw=0.8, label="train (per step)")
    k = min(50, len(loss))
    if k > 1:
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], smooth, color="tab:blue", label=f"train (mean of {k} steps)")
    if history["val"]:
        vs, vl = zip(*history["val"])
        ax.plot(vs, vl, "o-", color="tab:orange", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------------------

def save(path, params, opt_state, step, run, tokenizer, rng, history, scaler=None):
    """Everything the loop needs to continue exactly: the next batch, the next update, the same history (and, in
    fp16, the loss scale)."""
    payload = {"params": params, "opt_state": opt_state, "step": step, "run": run, "tokenizer": tokenizer.to_json(),
               "rng": checkpoint.rng_to_json(rng), "history": history}
    if scaler is not None:
        payload["loss_scale"] = scaler
    checkpoint.save(path, payload)


def train_step(params, opt_state, config, run, x, y, step, scaler=None, zero_state=None, blocks=None, owned=None):
    """One update: loss and gradients (in ``run["precision"]``) of this rank's rows of each micro-batch, averaged
    over micro-batches and ranks, global-norm clipping, AdamW at the scheduled learning rate (on this rank's shard
    with ZeRO). fp16 (``scaler``): an overflow skips the update and halves the loss scale. ``blocks``: recomputed or
    tensor-parallel blocks (``blockwise.Blocks``), ``owned``: the tensor-parallel norm's mask. Returns ``(loss, lr,
    grad_norm, event)``, ``event`` being the loss scaler's (or None)."""
    scale = scaler["scale"] if scaler is not None else 1.0
    pad_to = distributed.world_size("dp") if zero_state is not None else 1
    loss, flat = data_parallel.loss_and_grads(params, config, x, y, run["precision"], scale, run["grad_accum"],
                                              pad_to, blocks)
    lr = optim.warmup_cosine(step, run["lr"], run["warmup"], run["steps"], min_lr=run["lr"] * run["min_lr_ratio"])
    hyper = dict(max_norm=run["grad_clip"], betas=tuple(run["betas"]), weight_decay=run["weight_decay"],
                 skip_nonfinite=scaler is not None, owned=owned)
    if zero_state is None:
        grad_norm = data_parallel.update(params, flat, opt_state, lr, **hyper)
    else:
        grad_norm = zero.update(params, flat, zero_state, lr, **hyper)
    event = precision.scaler_update(scaler, math.isfinite(grad_norm)) if scaler is not None else None
    return loss, lr, grad_norm, event


def _resume_after_restart(args):
    """After ``torchrun --max-restarts`` restarted the group, continue from the run's last checkpoint, if any."""
    if args.resume is None and distributed.restart_count() > 0:
        last = (args.out or Path("runs") / (args.config or "small")) / CHECKPOINT
        if last.exists():
            args.resume = last


def check_memory(run, vocab_size):
    """Refuse a run whose estimated memory (``reference/training/memory.py``) exceeds this machine's; warn if it
    exceeds what is free now."""
    need = memory.estimate(run, vocab_size)
    total, avail = memory.available()
    if total is not None and need["total"] > total:
        raise ConfigError(f"this run needs about {memory.describe(need)}; this machine has "
                          f"{memory.gib(total)} in all. Use a smaller --d-model, --n-layer, --batch-size or "
                          f"--block-size")
    if avail is not None and need["total"] > avail:
        print(f"lm-primer-train: warning: this run needs about {memory.gib(need['total'])}, more than the "
              f"{memory.gib(avail)} free now; it may swap or be killed", file=sys.stderr)
    return need


def prepare(args):
    """Everything that can be checked before any data is read or anything written: ``(run, resumed, out, figure)``.

    ``resumed`` is the checkpoint's :class:`reference.training.trained.Trained` (``None`` for a fresh run).
    """
    resumed = None
    if args.resume is not None:
        resumed = trained.load(args.resume)
        missing = [k for k in ("opt_state", "rng", "history") if k not in resumed.payload]
        if missing:
            raise checkpoint.CheckpointError(f"--resume {args.resume} holds a model but not the training state "
                                             f"needed to continue it exactly (no {', '.join(missing)})")
        run = resumed_run(args, resumed.run)
    else:
        run = make_run(args)
    validate(run, args.tp, args.recompute)
    first = resumed.step if resumed else 0
    if first >= run["steps"]:
        raise ConfigError(f"--resume {args.resume} is at step {first}, and the run has --steps {run['steps']}: "
                          f"nothing to do; give a larger --steps to continue it")
    if args.stop_at is not None and not first < args.stop_at <= run["steps"]:
        raise ConfigError(f"--stop-at {args.stop_at}: expected a step in [{first + 1}, {run['steps']}]")
    out = run_dir.check_out_dir(args.out or (args.resume.parent if args.resume else Path("runs") / run["config"]))
    figure = run_dir.figure_path(args.figure, FIGURE_NAME)
    # the char tokenizer's vocabulary is unknown before the corpus is read: its 256 bytes plus, at most, 256 chars
    vocab = resumed.tokenizer.vocab_size if resumed else run["bpe_vocab"] if run["tokenizer"] == "bpe" else 512
    check_memory(run, vocab)
    return run, resumed, out, figure


def main(argv=None):
    """The ``lm-primer-train`` command. Returns None (a console script exits with its return value); the results
    are in ``--out``: ``checkpoint.npz`` and ``log.json``."""
    t_start = time.perf_counter()
    args = parse_args(argv)
    rank, world = distributed.init()                     # (0, 1) without torchrun
    is_main = rank == 0
    _resume_after_restart(args)
    try:
        run, resumed, out, figure = prepare(args)
        distributed.init_groups(args.tp)                 # W/tp data-parallel x tp tensor-parallel ranks
        # Rank 0 alone writes the run folder, so it alone locks it and guards the checkpoint in it.
        with run_dir.RunLock(out) if is_main else contextlib.nullcontext():
            if is_main:
                run_dir.refuse_overwrite(out / CHECKPOINT, args.resume, args.overwrite)
            tokenizer = resumed.tokenizer if resumed else None
            tokenizer, train_ids, val_ids = build_data(run, tokenizer, progress=not args.no_progress)
            with run_dir.StopSignals() as stop:
                _train(args, run, resumed, out, figure, tokenizer, train_ids, val_ids, stop, t_start, is_main, world)
    except (ConfigError, data.CorpusError, checkpoint.CheckpointError, run_dir.RunDirError,
            FileNotFoundError) as err:
        print(f"lm-primer-train: error: {err}", file=sys.stderr)
        raise SystemExit(2) from err
    except MemoryError as err:
        print(f"lm-primer-train: error: out of memory: {err}; the last checkpoint in --out, if any, is intact",
              file=sys.stderr)
        raise SystemExit(2) from err
    except KeyboardInterrupt:
        print("lm-primer-train: interrupted before the first step; nothing was written", file=sys.stderr)
        raise SystemExit(130) from None


def _stop_agreed(stop):
    """Has a SIGINT/SIGTERM arrived (on any rank)? Under torchrun every rank must stop after the same step, so the
    flag is summed over the ranks (a collective each step; the identity in one process)."""
    flag = np.array([stop.signal is not None], dtype=np.float64)
    return bool(distributed.all_reduce(flag)[0] > 0)


def _full(tree_, tp):
    """The full parameters (or AdamW moments) from this rank's tensor-parallel shard: a collective under ``--tp``."""
    return tensor_parallel.gather(tree_) if tp > 1 else tree_


def _save(out, params, opt_state, zero_state, step, run, tokenizer, rng, history, scaler, is_main, tp=1):
    """Write the checkpoint on rank 0, in the full format. Under ZeRO-1 the full optimizer state is gathered first,
    under ``--tp`` the full model: collectives that every rank joins."""
    state = zero.full_state(params, zero_state) if zero_state is not None else opt_state
    if tp > 1:
        params = _full(params, tp)
        state = {"step": state["step"], "m": _full(state["m"], tp), "v": _full(state["v"], tp)}
    if is_main:
        save(out / CHECKPOINT, params, state, step, run, tokenizer, rng, history, scaler)


def _train(args, run, resumed, out, figure, tokenizer, train_ids, val_ids, stop, t_start, is_main, world):
    """The loop, from the first step to the log: the run folder is locked and its paths checked."""
    config = model_config(run, tokenizer.vocab_size)
    if resumed is not None:
        ckpt = resumed.payload
        params, opt_state, step = ckpt["params"], ckpt["opt_state"], ckpt["step"]
        rng = checkpoint.rng_from_json(ckpt["rng"])
        history = ckpt["history"]
    else:
        rng = np.random.default_rng(run["seed"])
        params = gpt.init_params(config, rng, dtype=np.float32)
        opt_state = optim.adamw_init(params)
        step = 0
        history = {"train": [], "val": []}
    scaler = None
    if run["precision"] == "fp16":
        scaler = resumed.payload.get("loss_scale") if resumed is not None else None
        scaler = scaler or precision.scaler_init()
    n_params = gpt.n_params(params)
    tp, dp = args.tp, world // args.tp
    blocks, owned = None, None
    if tp > 1:                                           # this rank's shard of the model and of its moments
        t = distributed.rank("tp")
        params = tensor_parallel.shard(params, t, tp)
        opt_state = {"step": opt_state["step"], "m": tensor_parallel.shard(opt_state["m"], t, tp),
                     "v": tensor_parallel.shard(opt_state["v"], t, tp)}
        blocks = tensor_parallel.BLOCKS
        pad_to = dp if args.zero else 1
        owned = tensor_parallel.owned_mask(params, -(-gpt.n_params(params) // pad_to) * pad_to)
    if args.recompute:
        blocks = recompute.recomputed(blocks)           # gpt's blocks (None) or the tensor-parallel ones
    zero_state = None
    if args.zero:
        zero_state = zero.init(params, opt_state)        # this rank's shard; the full state is dropped
        opt_state = None
    if is_main:
        print(f"config {run['config']}: {n_params:,} parameters, {run['tokenizer']} tokenizer "
              f"(vocab {tokenizer.vocab_size}), {train_ids.size:,} training tokens; step {step} of {run['steps']}; "
              f"{run['precision']}, {dp} data-parallel x {tp} tensor-parallel rank(s) x {run['batch_size'] // dp} "
              f"rows x {run['grad_accum']} micro-batch(es){', ZeRO-1' if args.zero else ''}"
              f"{', recomputed blocks' if args.recompute else ''}", flush=True)

    from tqdm.auto import tqdm

    last = run["steps"] if args.stop_at is None else args.stop_at
    rows_per_step = run["batch_size"] * run["grad_accum"]
    tokens_per_step = rows_per_step * run["block_size"]
    bar = tqdm(total=last, initial=step, disable=args.no_progress or not is_main, unit="step", dynamic_ncols=True)
    t_train, n_steps, tok_s, saved = 0.0, 0, None, step
    while step < last and not _stop_agreed(stop):
        step += 1
        n_steps += 1
        t0 = time.perf_counter()
        x, y = data.get_batch(train_ids, rows_per_step, run["block_size"], rng)    # the same on every rank
        loss, lr, grad_norm, event = train_step(params, opt_state, config, run, x, y, step, scaler, zero_state,
                                                blocks, owned)
        dt = time.perf_counter() - t0
        skipped = scaler is not None and not math.isfinite(grad_norm)
        if event is not None:
            history.setdefault("loss_scale", []).append([step, event])
            if is_main:
                bar.write(f"step {step}: {event}")
        if not (math.isfinite(loss) or skipped):
            bar.close()
            raise SystemExit(f"lm-primer-train: error: the loss is {loss} at step {step}; training diverged "
                             f"(try a lower --lr than {run['lr']}). The last checkpoint in {out} is intact.")
        t_train += dt
        history["train"].append([step, loss, lr, grad_norm])
        bar.update(1)
        tok_s = tokens_per_step / dt if tok_s is None else 0.9 * tok_s + 0.1 * tokens_per_step / dt   # smoothed
        bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tok_s:,.0f}", lr=f"{lr:.2e}")
        evaluate_now = step % run["eval_interval"] == 0 or step == run["steps"]
        if evaluate_now:
            full = _full(params, tp)                     # a collective under --tp
            if is_main:
                val = evaluate(full, config, val_ids, run)
                history["val"].append([step, val])
                bar.write(f"step {step}: train loss {loss:.4f}, validation loss {val:.4f}")
        if evaluate_now or step == last:
            _save(out, params, opt_state, zero_state, step, run, tokenizer, rng, history, scaler, is_main, tp)
            saved = step
    interrupted = stop.signal is not None and step < last
    if saved != step:                       # the last step before a signal was not saved yet
        _save(out, params, opt_state, zero_state, step, run, tokenizer, rng, history, scaler, is_main, tp)
    bar.close()
    opt_bytes = zero.optimizer_bytes(zero_state if args.zero else opt_state)
    comm = distributed.traffic()
    params = _full(params, tp)
    identical = data_parallel.replicas_agree(params, group="world")   # a collective: every rank the same bits?
    distributed.destroy()
    if not is_main:
        return

    log = {"run": run, "step": step, "n_params": n_params, "vocab_size": tokenizer.vocab_size,
           "train_seconds": round(t_train, 2),
           "tokens_per_second": round(n_steps * tokens_per_step / t_train, 1) if n_steps else None,
           "world_size": world, "tp": tp, "data_parallel": dp, "batch_per_rank": run["batch_size"] // dp,
           "zero": args.zero, "recompute": args.recompute, "optimizer_bytes_per_rank": opt_bytes,
           "replicas_identical": identical, "communication": comm, **history}
    if interrupted:
        log["stopped_by"] = stop.signal.name
    if step == run["steps"] and stop.signal is None:
        log["samples"] = samples(params, config, tokenizer, run)
        for line in log["samples"]:
            print("  " + line)
    log["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    (out / "log.json").write_text(json.dumps(log, indent=1) + "\n", encoding="utf-8")
    fig = plot_losses(history, figure, f"{run['config']}: d_model={run['d_model']}, n_layer={run['n_layer']}, "
                                       f"{run['tokenizer']} tokens")
    print(f"wrote {out / CHECKPOINT}, {out / 'log.json'} and {fig}", flush=True)
    if interrupted:
        print(f"lm-primer-train: stopped by {stop.signal.name} after step {step} of {run['steps']}; continue with: "
              f"python -m reference.train --resume {out / CHECKPOINT}", file=sys.stderr, flush=True)
        raise SystemExit(stop.exit_code)


if __name__ == "__main__":
    main()
