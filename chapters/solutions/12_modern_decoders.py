r"""Worked solutions to the exercises of chapter 12 ("From the 2017 Transformer to today's LLMs").

``tests/book/test_solutions_12.py`` checks each one.
"""
import numpy as np

from reference.models import gpt
from reference.ops import rope


def interleaved_to_half(W, n_head):
    r"""Exercise 1: a query or key projection ``W`` (C, H d) of a model in the interleaved RoPE layout (Meta's Llama
    code), converted for the rotate-half layout (Hugging Face's, and ``rope.forward``'s default).

    ``rope.interleave_permutation(d)`` is the ``p`` with ``R^int(x[p]) = R^half(x)[p]`` for every x. So if each head's
    columns are reordered by :math:`p^{-1}`, :math:`q_{half} = q_{int}[p^{-1}]`, then :math:`R^{int}(q_{int}) =
    R^{half}(q_{half})[p]`: the same vector with its channels permuted, in every head of q and of k alike. A dot
    product does not see a permutation applied to both sides, so every attention score, and everything after it, is
    unchanged. (Hugging Face's conversion script does this to the rows of the (out, in) ``q_proj``/``k_proj``.)
    """
    C, Hd = W.shape
    d = Hd // n_head
    inverse = np.argsort(rope.interleave_permutation(d))               # p^{-1}
    return np.ascontiguousarray(W.reshape(C, n_head, d)[:, :, inverse].reshape(C, Hd))


def kv_cache_gib(n_layer, n_kv_head, d_k, n_tokens, itemsize=2):
    r"""Exercise 2: the KV cache of ``n_tokens`` tokens (all sequences of a batch together), in GiB:
    :math:`2 L H_{kv} d_k` numbers per token (``gpt.kv_bytes_per_token``).

    Llama 3 70B (L = 80, H_kv = 8, d_k = 128) in bf16: 320 KiB per token, so 16 x 8192 tokens take 40 GiB; with one
    K/V head per query head (64) it would be 320 GiB, more than any single accelerator holds.
    """
    return 2 * n_layer * n_kv_head * d_k * itemsize * n_tokens / 2**30


def mixtral_8x7b():
    r"""Exercise 3: the config of Mixtral 8x7B as a :class:`gpt.GPTConfig`, and its ``(total, active)`` parameters.

    No array is made: ``gpt.param_shapes`` lists the shapes. Total 46.7 B, active 12.9 B per token: each layer's
    attention (42 M) and router are always used, but of its 8 experts (1.41 B together) only 2 run. The name "8x7B"
    overcounts: the experts share everything but the FFN, so 8 x 7 = 56 is not the total.
    """
    config = gpt.GPTConfig(vocab_size=32000, block_size=32768, n_layer=32, n_head=32, d_model=4096, norm="rmsnorm",
                           positional="rope", ffn="swiglu", d_ff=14336, n_kv_head=8, bias=False,
                           tie_embeddings=False, n_expert=8, top_k=2, rope_theta=1e6)
    total = sum(int(np.prod(s)) for s in gpt.param_shapes(config).values())
    return config, total, gpt.n_active_params(config)
