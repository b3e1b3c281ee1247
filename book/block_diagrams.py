"""The 2017 decoder block and the Llama block, side by side, drawn by code (chapter 12).

Each column is data: a list of boxes from the tokens (bottom) to the logits (top), each with its text, its colour
kind, and whether it changed from the 2017 block (drawn with a thick outline); residual skips are pairs of box
indices. :func:`draw_pair` draws two columns on one figure. (``book/diagrams.py``, chapter 0's, draws the book's
other models in the same bottom-to-top way; the two are to be merged into one module.)
"""
from typing import NamedTuple

import matplotlib.pyplot as plt
from matplotlib.patches import Circle, FancyBboxPatch

COLORS = {"io": "#eeeeee", "embed": "#d9f0d3", "norm": "#fff3b0", "attn": "#fdd0a2", "ffn": "#c6dbef",
          "out": "#dadaeb"}


class Step(NamedTuple):
    """One box of a column: ``text`` (may hold a newline), ``kind`` (a key of COLORS, or "add" for a residual sum),
    ``new`` (changed since 2017: thick outline), ``note`` (small text to the left: a shape or a detail)."""

    text: str
    kind: str = "io"
    new: bool = False
    note: str = ""


class Column(NamedTuple):
    title: str
    steps: list                 # bottom to top
    skips: list                 # (from index, to index): the stream leaves above ``from`` and joins the add ``to``
    repeat: tuple               # (first index, last index) of the block repeated L times


def transformer_2017():
    """The paper's decoder as a decoder-only LM (no cross-attention): sinusoids added, post-LN, ReLU FFN."""
    s = [Step("tokens", "io"), Step("token embedding", "embed"), Step("+ sinusoidal positions", "embed",
                                                                        note="P[pos], fixed"),
         Step("masked multi-head attention\nH heads of Q, K, V", "attn", note="K, V cache: H heads"),
         Step("+", "add"), Step("LayerNorm", "norm", note="after the sum"),
         Step("FFN: ReLU(x W1 + b1) W2 + b2", "ffn", note="d_ff = 4 d"), Step("+", "add"),
         Step("LayerNorm", "norm", note="after the sum"), Step("linear head (= embedding^T)", "out"),
         Step("softmax: next token", "io")]
    return Column("2017 Transformer, decoder-only (Vaswani et al.)", s, [(2, 4), (5, 7)], (3, 8))


def llama():
    """The Llama block: pre-RMSNorm, RoPE inside attention, grouped-query K/V, SwiGLU (or experts), untied head."""
    s = [Step("tokens", "io"), Step("token embedding\n(no position added)", "embed", new=True),
         Step("RMSNorm", "norm", new=True, note="before the branch"),
         Step("grouped-query attention\nRoPE on q, k; H_kv < H K/V heads", "attn", new=True,
              note="K, V cache: H_kv heads"),
         Step("+", "add"), Step("RMSNorm", "norm", new=True, note="before the branch"),
         Step("SwiGLU: (silu(x Wg) * x Wu) Wd\nor top-k of E SwiGLU experts", "ffn", new=True,
              note="d_ff ~ 8/3 d"),
         Step("+", "add"), Step("RMSNorm", "norm", new=True), Step("lm_head (untied)", "out", new=True),
         Step("softmax: next token", "io")]
    return Column("Llama / Mistral / Mixtral block (2023)", s, [(1, 4), (4, 7)], (2, 7))


def _draw_column(ax, col, x, dy=1.25, w=5.2, h=0.8):
    ys = [i * dy for i in range(len(col.steps))]
    for i, (step, y) in enumerate(zip(col.steps, ys)):
        if step.kind == "add":
            ax.add_patch(Circle((x, y), 0.24, fc="white", ec="0.25", lw=1.1, zorder=3))
            ax.text(x, y, "+", ha="center", va="center", fontsize=11, zorder=4)
        else:
            ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.12",
                                        fc=COLORS[step.kind], ec="black" if step.new else "0.45",
                                        lw=2.4 if step.new else 0.9, zorder=2))
            ax.text(x, y, step.text, ha="center", va="center", fontsize=8.5, zorder=3)
        if step.note:
            ax.text(x - w / 2 - 0.15, y, step.note, ha="right", va="center", fontsize=7, color="0.35",
                    family="monospace")
        if i:
            below = col.steps[i - 1]
            y0 = ys[i - 1] + (0.24 if below.kind == "add" else h / 2)
            y1 = y - (0.24 if step.kind == "add" else h / 2)
            ax.annotate("", xy=(x, y1), xytext=(x, y0), arrowprops=dict(arrowstyle="-|>", color="0.25", lw=1.0))
    for a, b in col.skips:            # leave above box a, run up the right side, join the add b from the right
        y0 = ys[a] + (0.24 if col.steps[a].kind == "add" else h / 2) + 0.18
        xs = x + w / 2 + 0.35
        ax.plot([x, xs, xs], [y0, y0, ys[b]], color="tab:red", lw=1.2, zorder=1)
        ax.annotate("", xy=(x + 0.24, ys[b]), xytext=(xs, ys[b]),
                    arrowprops=dict(arrowstyle="-|>", color="tab:red", lw=1.2))
    lo, hi = col.repeat
    ax.add_patch(FancyBboxPatch((x - w / 2 - 2.9, ys[lo] - h / 2 - 0.25), w + 3.6, ys[hi] - ys[lo] + h + 0.5,
                                boxstyle="round,pad=0,rounding_size=0.1", fill=False, ls="--", ec="0.5", lw=1))
    ax.text(x + w / 2 + 0.95, (ys[lo] + ys[hi]) / 2, "x L blocks", rotation=90, va="center", fontsize=8,
            color="0.35", style="italic")
    ax.text(x, ys[-1] + 0.9, col.title, ha="center", fontsize=10, weight="bold")
    return ys[-1] + 1.3


def draw_pair(left, right):
    """Two columns side by side on one figure; returns the figure."""
    fig, ax = plt.subplots(figsize=(13, 9))
    top = max(_draw_column(ax, left, 0.0), _draw_column(ax, right, 10.5))
    ax.set_xlim(-6.4, 14.6)
    ax.set_ylim(-0.9, top)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig
