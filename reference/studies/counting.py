r"""What makes a model "large": parameters, FLOPs and memory from a decoder-only configuration (material §1).

The material says GPT-3 has 175 billion parameters. That number follows from its published shape (Brown et al.
2020, table 2.1: 96 layers, :math:`d_{model} = 12288`, 96 heads, context 2048, vocabulary 50257) and the
Transformer's structure, and this module does the arithmetic.

Per block of a GPT-style decoder (``d_ff = 4 d``):

.. math::

    \underbrace{4d^2 + 4d}_{W_Q, W_K, W_V, W_O \text{ and biases}}
    + \underbrace{8d^2 + 5d}_{W_1 (d \times 4d), b_1, W_2 (4d \times d), b_2}
    + \underbrace{4d}_{\text{two LayerNorms}} = 12 d^2 + 13 d

so :math:`N \approx 12 L d^2` plus the embeddings :math:`V d + T d` and a final LayerNorm (``2d``); the output head
is tied to the token embedding and adds nothing.

Compute (Kaplan et al. 2020): a forward pass costs about ``2 N`` FLOPs per token for the matmuls (one multiply and
one add per weight) plus ``2 L T d`` for the attention scores and weighted sum (with a causal mask, half of
``4 L T d``). Training (forward + backward, the backward costing twice the forward) costs about ``6 N`` FLOPs per
token, so a run over ``D`` tokens costs :math:`C \approx 6 N D`.

Memory of training state with Adam, per parameter: the weights, their gradients, and Adam's two moments; in mixed
precision also a float32 master copy of the weights.
"""
import dataclasses

BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, "int4": 0.5}


@dataclasses.dataclass(frozen=True)
class DecoderShape:
    """The published shape of a GPT-style decoder (no code needed to build it: only the counts)."""

    n_layer: int
    d_model: int
    n_head: int
    n_ctx: int
    vocab_size: int

    def __post_init__(self):
        for name in ("n_layer", "d_model", "n_head", "n_ctx", "vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"DecoderShape.{name}: expected a positive integer, got {value!r}")
        if self.d_model % self.n_head:
            raise ValueError(f"DecoderShape: d_model={self.d_model} is not divisible by n_head={self.n_head}")


GPT3_175B = DecoderShape(n_layer=96, d_model=12288, n_head=96, n_ctx=2048, vocab_size=50257)
GPT2_SMALL = DecoderShape(n_layer=12, d_model=768, n_head=12, n_ctx=1024, vocab_size=50257)


def param_count(shape, learned_positions=True):
    """Exact parameter count of a GPT-2-style decoder with tied output head, by part.

    Returns
    -------
    dict with ``embedding`` (token + learned positions), ``per_block``, ``blocks`` (``n_layer * per_block``),
    ``final_ln``, ``total`` and ``approx_12Ld2`` (the ``12 L d^2`` rule of thumb).
    """
    d, L = shape.d_model, shape.n_layer
    attn = 4 * d * d + 4 * d       # Wq, Wk, Wv, Wo (d, d) and their biases
    mlp = 8 * d * d + 5 * d        # W1 (d, 4d), b1 (4d,), W2 (4d, d), b2 (d,)
    norms = 2 * 2 * d              # ln1 and ln2, gamma and beta each
    per_block = attn + mlp + norms
    embedding = shape.vocab_size * d + (shape.n_ctx * d if learned_positions else 0)
    final_ln = 2 * d
    total = embedding + L * per_block + final_ln
    return {"embedding": embedding, "per_block": per_block, "blocks": L * per_block, "final_ln": final_ln,
            "total": total, "approx_12Ld2": 12 * L * d * d}


def flops_per_token(shape, n_params=None, causal=True):
    """Forward FLOPs per token: ``2 N`` (matmuls) plus attention ``4 L T d`` (halved with a causal mask).

    Embedding lookups are not multiply-adds, so ``N`` here excludes the embeddings (Kaplan et al. 2020, table 1),
    except for the tied output head, which is a real ``V x d`` matmul per token.
    """
    if n_params is None:
        counts = param_count(shape)
        n_params = counts["blocks"] + shape.vocab_size * shape.d_model
    attention = 4 * shape.n_layer * shape.n_ctx * shape.d_model * (0.5 if causal else 1.0)
    return 2 * n_params + attention


def training_flops(n_params, n_tokens):
    """Total training compute ``C = 6 N D`` (forward 2N, backward 4N per token)."""
    if n_params <= 0 or n_tokens <= 0:
        raise ValueError(f"expected positive n_params and n_tokens, got {n_params} and {n_tokens}")
    return 6 * n_params * n_tokens


def training_memory(n_params, weights="float32", grads=None, adam_state="float32", master_weights=None):
    """Bytes of training state with Adam: weights, gradients, two moments, and an optional float32 master copy.

    Mixed precision (the common recipe) is ``weights="bfloat16", grads="bfloat16", master_weights="float32"``:
    2 + 2 + 4 + 4 + 4 = 16 bytes per parameter. Activations come on top and depend on batch and sequence length.
    """
    names = {"weights": weights, "grads": grads or weights, "adam_m": adam_state, "adam_v": adam_state}
    if master_weights is not None:
        names["master_weights"] = master_weights
    unknown = {k: v for k, v in names.items() if v not in BYTES}
    if unknown:
        raise ValueError(f"unknown precision(s) {unknown}; expected one of {sorted(BYTES)}")
    parts = {k: n_params * BYTES[v] for k, v in names.items()}
    parts["total"] = sum(parts.values())
    return parts
