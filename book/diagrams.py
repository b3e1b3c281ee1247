"""Architecture diagrams drawn by code (matplotlib patches and arrows), for the map of chapter 0.

Each diagram is data: a list of :class:`Box` (what it computes, the ``reference/`` module that computes it, the
chapters that explain it), the arrows between boxes, the residual connections, and the dashed frames around a
repeated block. :func:`draw` turns one into a figure, so that a diagram is versioned and regenerated like every
other figure, and ``tests/book/test_diagrams.py`` checks that every module a box names exists.

Coordinates are in data units on an axis whose aspect is equal; y grows upwards (the data flows bottom to top, as in
the paper's figure 1).
"""
from typing import NamedTuple

import matplotlib.pyplot as plt
from matplotlib.patches import Circle, FancyBboxPatch, Rectangle

COLORS = {"io": "#eeeeee", "embed": "#d9f0d3", "norm": "#fff3b0", "attn": "#fdd0a2", "ffn": "#c6dbef",
          "out": "#dadaeb", "add": "white"}
SCALE = 0.66            # inches per data unit of a diagram
KIND_LABELS = {"embed": "embedding", "norm": "LayerNorm", "attn": "attention", "ffn": "feed-forward",
               "out": "output, loss, decoding", "io": "tokens and text"}


class Box(NamedTuple):
    """One step of a model. ``module`` is a path under ``reference/`` ("ops/attention.py"); ``chapters`` a label
    ("6, 7"). ``kind`` chooses the colour; "add" draws a small circle with a plus (a residual sum)."""

    key: str
    x: float
    y: float
    title: str
    module: str = ""
    chapters: str = ""
    kind: str = "io"
    w: float = 4.6
    h: float = 0.85


class Diagram(NamedTuple):
    """A whole figure: boxes, arrows ``(from_key, to_key)`` (or ``(from, to, "around")`` to go out sideways and
    along the gap between two columns), residuals ``(from_key, to_key)`` drawn around the
    right side at ``x + side``, frames ``(x0, y0, x1, y1, label)`` around repeated layers, and text notes
    ``(x, y, text)`` (shapes beside the stream)."""

    title: str
    boxes: list
    arrows: list
    residuals: list = []
    frames: list = []
    notes: list = []


def modules(diagram):
    """The ``reference/`` paths that the boxes of ``diagram`` name (each box may name several, comma-separated)."""
    return sorted({m.strip() for b in diagram.boxes for m in b.module.split(",") if m.strip()})


def _edge_point(box, toward_y):
    """The middle of the top or bottom edge of ``box`` that faces ``toward_y``."""
    half = 0.22 if box.kind == "add" else box.h / 2
    return box.x, box.y + (half if toward_y > box.y else -half)


def draw(diagram, ax=None):
    """Draw ``diagram`` on ``ax`` (a new figure if None) and return the figure."""
    boxes = {b.key: b for b in diagram.boxes}
    xs = [b.x - b.w / 2 for b in diagram.boxes] + [b.x + b.w / 2 + 0.6 for b in diagram.boxes]
    ys = [b.y - b.h / 2 for b in diagram.boxes] + [b.y + b.h / 2 for b in diagram.boxes]
    xs += [f[0] for f in diagram.frames] + [f[2] for f in diagram.frames] + [n[0] - 1.6 for n in diagram.notes]
    xs += [f[0] - 0.5 for f in diagram.frames]
    xlim, ylim = (min(xs) - 0.2, max(xs) + 0.2), (min(ys) - 0.2, max(ys) + 0.3)
    if ax is None:
        # a box of width 4.6 is 3 inches wide: room for its 9.5 pt title and its 7 pt module line
        fig = plt.figure(figsize=(SCALE * (xlim[1] - xlim[0]), SCALE * (ylim[1] - ylim[0])))
        ax = fig.add_axes((0, 0, 1, 1))                         # the whole figure: the scale above holds
    for x0, y0, x1, y1, label in diagram.frames:
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ls="--", lw=1, ec="0.45"))
        ax.text(x0 - 0.08, (y0 + y1) / 2, label, ha="right", va="center", rotation=90, fontsize=8, color="0.3",
                style="italic")
    for b in diagram.boxes:
        if b.kind == "add":
            ax.add_patch(Circle((b.x, b.y), 0.22, fc="white", ec="0.25", lw=1.1, zorder=3))
            ax.text(b.x, b.y, "+", ha="center", va="center", fontsize=11, zorder=4)
            continue
        ax.add_patch(FancyBboxPatch((b.x - b.w / 2, b.y - b.h / 2), b.w, b.h, zorder=2,
                                    boxstyle="round,pad=0,rounding_size=0.12", fc=COLORS[b.kind], ec="0.3", lw=1))
        where = "  ·  ".join(s for s in (b.module, f"ch. {b.chapters}" if b.chapters else "") if s)
        if where:
            ax.text(b.x, b.y + 0.14, b.title, ha="center", va="center", fontsize=9.5, zorder=3)
            ax.text(b.x, b.y - 0.2, where, ha="center", va="center", fontsize=7, family="monospace",
                    color="0.25", zorder=3)
        else:
            ax.text(b.x, b.y, b.title, ha="center", va="center", fontsize=9.5, zorder=3)
    for arrow in diagram.arrows:
        p, q = boxes[arrow[0]], boxes[arrow[1]]
        if len(arrow) > 2 and arrow[2] == "around":     # out sideways, along the gap between columns, in sideways
            right = q.x > p.x
            start = (p.x + (p.w / 2 if right else -p.w / 2), p.y)
            end = (q.x + (-q.w / 2 if right else q.w / 2), q.y)
            mid = (start[0] + end[0]) / 2
            ax.plot([start[0], mid, mid], [p.y, p.y, q.y], color="0.25", lw=1.1, zorder=1)
            start = (mid, q.y)
        elif abs(p.x - q.x) > 1e-9 and abs(p.y - q.y) > 1e-9:     # a bend: leave vertically, arrive sideways
            start = (p.x, p.y + (p.h / 2 if q.y > p.y else -p.h / 2))
            end = (q.x + (-q.w / 2 if q.x > p.x else q.w / 2), q.y)
            ax.plot([start[0], start[0]], [start[1], end[1]], color="0.25", lw=1.1, zorder=1)
            start = (start[0], end[1])
        else:
            start, end = _edge_point(p, q.y), _edge_point(q, p.y)
        ax.annotate("", xy=end, xytext=start, zorder=1,
                    arrowprops=dict(arrowstyle="-|>", color="0.25", lw=1.1, shrinkA=0, shrinkB=0))
    for a, c in diagram.residuals:
        p, q = boxes[a], boxes[c]
        lo, hi = sorted((p.y, q.y))
        # around the widest box the skip passes
        half = max((b.w / 2 for b in diagram.boxes if abs(b.x - p.x) < 1e-9 and lo <= b.y <= hi and b.kind != "add"),
                   default=0.22)
        x_side = p.x + half + 0.35
        y0 = p.y + (0.22 if p.kind == "add" else p.h / 2) + 0.15   # just above the box the stream leaves
        x_end = q.x + (0.22 if q.kind == "add" else q.w / 2)
        ax.plot([p.x, x_side, x_side], [y0, y0, q.y], color="tab:red", lw=1.2, zorder=1)
        ax.annotate("", xy=(x_end, q.y), xytext=(x_side, q.y), zorder=1,
                    arrowprops=dict(arrowstyle="-|>", color="tab:red", lw=1.2, shrinkA=0, shrinkB=0))
    for x, y, text in diagram.notes:
        ax.text(x, y, text, ha="right", va="center", fontsize=7, family="monospace", color="0.35")
    ax.set_aspect("equal")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.axis("off")
    ax.set_title(diagram.title, fontsize=10)
    return ax.figure


def legend(ax, kinds=("embed", "norm", "attn", "ffn", "out")):
    """A colour key for the box kinds, with the residual's red line, placed below ``ax``."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(fc=COLORS[k], ec="0.3", label=KIND_LABELS[k]) for k in kinds]
    handles.append(Line2D([], [], color="tab:red", lw=1.2, label="residual connection"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=7, frameon=False)


# ---------------------------------------------------------------------------------------------------------------
# The three models of the book
# ---------------------------------------------------------------------------------------------------------------

def gpt_block():
    """The decoder-only GPT that the book trains (``reference/models/gpt.py``): pre-LN blocks, tied output head."""
    B = Box
    boxes = [
        B("ids", 0, 0, "token ids  (B, T)", "tokenizers/char.py, tokenizers/bpe.py", "2"),
        B("emb", 0, 1.4, "x = wte[ids] + wpe[:T]", "ops/embedding.py", "2, 6", "embed"),
        B("ln1", 0, 2.9, "LN1", "ops/layernorm.py", "6", "norm"),
        B("attn", 0, 4.2, "causal multi-head attention", "ops/attention.py, ops/multihead.py", "6, 7", "attn"),
        B("add1", 0, 5.3, "+", kind="add"),
        B("ln2", 0, 6.4, "LN2", "ops/layernorm.py", "6", "norm"),
        B("ffn", 0, 7.7, "FFN: GELU(x W1 + b1) W2 + b2", "ops/ffn.py, ops/activations.py", "6", "ffn"),
        B("add2", 0, 8.8, "+", kind="add"),
        B("lnf", 0, 10.0, "LN_f", "ops/layernorm.py", "6", "norm"),
        B("head", 0, 11.3, "logits = LN_f(x) wte^T  (tied)", "models/gpt.py", "2", "out"),
        B("loss", -2.6, 12.9, "cross-entropy", "ops/cross_entropy.py", "2, 6", "out"),
        B("gen", 2.6, 12.9, "decoding, KV cache", "inference/decoding.py", "4", "out"),
    ]
    arrows = [("ids", "emb"), ("emb", "ln1"), ("ln1", "attn"), ("attn", "add1"), ("add1", "ln2"), ("ln2", "ffn"),
              ("ffn", "add2"), ("add2", "lnf"), ("lnf", "head"), ("head", "loss"), ("head", "gen")]
    residuals = [("emb", "add1"), ("add1", "add2")]
    frames = [(-2.8, 2.2, 3.2, 9.3, "block × L  (models/gpt.py, ch. 2, 6)")]
    notes = [(-3.4, 0.7, "(B, T)"), (-3.4, 2.15, "(B, T, C)"), (-3.4, 5.3, "(B, T, C)"), (-3.4, 8.8, "(B, T, C)"),
             (-3.4, 12.1, "(B, T, V)")]
    return Diagram("Decoder-only GPT (pre-LN), the model the book trains", boxes, arrows, residuals, frames, notes)


def _post_ln_stack(x, y0, prefix, sublayers):
    """Boxes of one post-LN layer: each sublayer followed by Add & Norm, stacked upwards from ``y0``."""
    boxes, arrows, residuals = [], [], []
    y, below = y0, None
    for name, title, module, kind in sublayers:
        sub = Box(f"{prefix}{name}", x, y, title, module, "6", kind)
        norm = Box(f"{prefix}{name}_an", x, y + 1.25, "Add & Norm: LN(x + sublayer(x))", "models/layers.py", "6",
                   "norm")
        boxes += [sub, norm]
        arrows.append((sub.key, norm.key))
        if below is not None:
            arrows.append((below, sub.key))
            residuals.append((below, norm.key))
        below = norm.key
        y += 2.7
    return boxes, arrows, residuals, below


def encoder_decoder():
    """The paper's encoder-decoder (``reference/models/transformer.py``): post-LN, sinusoidal positions, tied output."""
    B = Box
    xe, xd = -3.6, 3.6
    boxes = [
        B("src", xe, 0, "source ids  (B, S)"),
        B("src_emb", xe, 1.4, "√d · E_src[src] + PE", "ops/embedding.py, ops/positional.py", "6", "embed"),
        B("tgt", xd, 0, "target ids, shifted right  (B, T)"),
        B("tgt_emb", xd, 1.4, "√d · E_tgt[tgt] + PE", "ops/embedding.py, ops/positional.py", "6", "embed"),
    ]
    enc, enc_arrows, enc_res, enc_top = _post_ln_stack(xe, 2.9, "enc_", [
        ("attn", "self-attention (no mask)", "ops/multihead.py", "attn"),
        ("ffn", "FFN: max(0, x W1 + b1) W2 + b2", "ops/ffn.py", "ffn")])
    dec, dec_arrows, dec_res, dec_top = _post_ln_stack(xd, 2.9, "dec_", [
        ("self", "masked self-attention (causal)", "ops/multihead.py, ops/attention.py", "attn"),
        ("cross", "cross-attention: K, V from memory", "ops/multihead.py", "attn"),
        ("ffn", "FFN: max(0, x W1 + b1) W2 + b2", "ops/ffn.py", "ffn")])
    boxes += enc + dec
    boxes += [B("memory", xe, 8.9, "memory m  (B, S, C)", "models/transformer.py", "6", "io"),
              B("logits", xd, 11.2, "logits = h E_tgt^T  (tied)", "models/transformer.py", "6", "out"),
              B("loss", xd, 12.6, "softmax, cross-entropy", "ops/cross_entropy.py", "6", "out")]
    # the residual stream enters each first sublayer from the embedding; the sublayer reads it, the Add & Norm
    # adds it back
    arrows = [("src", "src_emb"), ("src_emb", "enc_attn"), ("tgt", "tgt_emb"), ("tgt_emb", "dec_self"),
              (enc_top, "memory"), ("memory", "dec_cross", "around"), (dec_top, "logits"), ("logits", "loss")]
    arrows += enc_arrows + dec_arrows
    residuals = [("src_emb", "enc_attn_an"), ("tgt_emb", "dec_self_an")] + enc_res + dec_res
    frames = [(xe - 2.5, 2.2, xe + 2.95, 7.75, "encoder layer × N"),
              (xd - 2.5, 2.2, xd + 2.95, 10.45, "decoder layer × N")]
    return Diagram("The paper's encoder-decoder (post-LN), reference/models/transformer.py", boxes, arrows,
                   residuals, frames)


def bert_encoder():
    """The BERT encoder the book runs with MiniLM's weights (``reference/models/bert.py``), and what it is used for."""
    B = Box
    boxes = [
        B("text", 0, 0, "text"),
        B("wp", 0, 1.3, "WordPiece: [CLS] pieces [SEP]", "tokenizers/wordpiece.py", "8", "io"),
        B("emb", 0, 2.7, "LN(E_tok + E_pos + E_type)", "models/bert.py, ops/embedding.py", "8", "embed"),
        B("attn", 0, 4.2, "self-attention, padding mask only", "ops/multihead.py", "6, 8", "attn"),
        B("an1", 0, 5.45, "Add & Norm", "ops/layernorm.py", "6", "norm"),
        B("ffn", 0, 6.9, "FFN: GELU(x W1 + b1) W2 + b2", "ops/ffn.py", "6", "ffn"),
        B("an2", 0, 8.15, "Add & Norm", "ops/layernorm.py", "6", "norm"),
        B("hidden", 0, 9.6, "one vector per token  (B, T, 384)", "models/bert.py", "8", "io"),
        B("pool", 0, 10.9, "mean over real tokens, L2-normalise", "models/bert.py", "8", "out"),
        B("summ", 0, 12.2, "sentence scores → extractive summary", "inference/summarizer.py", "8", "out"),
    ]
    arrows = [("text", "wp"), ("wp", "emb"), ("emb", "attn"), ("attn", "an1"), ("an1", "ffn"), ("ffn", "an2"),
              ("an2", "hidden"), ("hidden", "pool"), ("pool", "summ")]
    residuals = [("emb", "an1"), ("an1", "an2")]
    frames = [(-2.5, 3.5, 2.95, 8.75, "layer × 6 (MiniLM), post-LN")]
    return Diagram("BERT encoder (all-MiniLM-L6-v2), reference/models/bert.py", boxes, arrows, residuals, frames)


def transitive_reduction(prerequisites):
    """The same order with every implied edge removed: p -> c goes when p is already a prerequisite of another
    prerequisite of c (read 6 before 2 and 2 before 4, and "6 before 4" needs no arrow of its own)."""
    def ancestors(c, seen=None):
        seen = set() if seen is None else seen
        for p in prerequisites.get(c, []):
            if p not in seen:
                seen.add(p)
                ancestors(p, seen)
        return seen

    return {c: [p for p in ps if not any(p in ancestors(q) for q in ps if q != p)]
            for c, ps in prerequisites.items()}


def reading_order(prerequisites, titles, ax=None):
    """Chapters as nodes in columns by depth (the longest chain of prerequisites), an arrow from each prerequisite
    that is not implied by the others (:func:`transitive_reduction`).

    ``prerequisites``: ``{chapter: [chapters to read first]}``; ``titles``: ``{chapter: short title}``.
    """
    edges = transitive_reduction(prerequisites)
    depth = {}

    def level(c):
        if c not in depth:
            depth[c] = 1 + max((level(p) for p in prerequisites.get(c, [])), default=-1)
        return depth[c]

    for c in titles:
        level(c)
    rank, columns = {}, {}
    for d in sorted(set(depth.values())):
        # order a column by the mean rank of the prerequisites (fewer crossings), then by chapter number
        centre = {c: sum(rank[p] for p in edges.get(c, [])) / max(len(edges.get(c, [])), 1)
                  for c in titles if depth[c] == d}
        cs = sorted(centre, key=lambda c: (centre[c], c))
        columns[d] = cs
        shift = sum(centre.values()) / len(cs)      # the column sits level with what it comes from
        rank.update({c: i - (len(cs) - 1) / 2 + shift for i, c in enumerate(cs)})
    pos = {c: (3.3 * depth[c], -1.25 * rank[c]) for c in titles}
    if ax is None:
        _, ax = plt.subplots(figsize=(2.2 * len(columns), 0.75 * max(len(cs) for cs in columns.values()) + 1.2))
    for c, pres in edges.items():
        for p in pres:
            (x0, y0), (x1, y1) = pos[p], pos[c]
            # an arrow that skips a column bows away from the boxes in between
            bend = 0.0 if depth[c] - depth[p] == 1 else (-0.2 if y0 > y1 else 0.2)
            ax.annotate("", xy=(x1 - 1.25, y1), xytext=(x0 + 1.25, y0), zorder=1,
                        arrowprops=dict(arrowstyle="-|>", color="0.45", lw=0.9, shrinkA=0, shrinkB=0,
                                        connectionstyle=f"arc3,rad={bend}"))
    for c, (x, y) in pos.items():
        ax.add_patch(FancyBboxPatch((x - 1.25, y - 0.3), 2.5, 0.6, boxstyle="round,pad=0,rounding_size=0.1",
                                    fc="#dbe9f6" if c else "#fde0c5", ec="0.3", lw=1, zorder=2))
        ax.text(x, y, f"{c}. {titles[c]}", ha="center", va="center", fontsize=8, zorder=3)
    xs, ys = [p[0] for p in pos.values()], [p[1] for p in pos.values()]
    ax.set_xlim(min(xs) - 1.4, max(xs) + 1.4)
    ax.set_ylim(min(ys) - 0.6, max(ys) + 0.6)
    ax.set_aspect("equal")
    ax.axis("off")
    return ax.figure
