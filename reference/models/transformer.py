r"""The encoder-decoder Transformer of "Attention Is All You Need" (material §3), forward and backward.

.. math::
    x^{\text{enc}}_0 = \sqrt{d_\text{model}}\; E_\text{src}[\text{src}] + PE, \qquad
    m = \text{Encoder}_N \circ \dots \circ \text{Encoder}_1 (x^{\text{enc}}_0)

    x^{\text{dec}}_0 = \sqrt{d_\text{model}}\; E_\text{tgt}[\text{tgt}] + PE, \qquad
    h = \text{Decoder}_N(\dots \text{Decoder}_1(x^{\text{dec}}_0, m) \dots, m), \qquad
    \text{logits} = h\, E_\text{tgt}^\top

Choices, each as in the paper unless said otherwise:

- Token embeddings are multiplied by :math:`\sqrt{d_\text{model}}` and the sinusoidal positions
  (``reference/ops/positional.py``) are added (paper §3.4, §3.5).
- The output projection is tied to the target embedding, ``logits = h @ wte_tgt.T`` (paper §3.4: "we share the
  same weight matrix between the two embedding layers and the pre-softmax linear transformation"). The paper
  also shares the source embedding, because it uses one joint BPE vocabulary; here source and target
  vocabularies may differ, so the source embedding is its own matrix. The tied matrix's gradient is the sum of
  its two uses (lookup and projection).
- Post-LN layers by default (``norm="post"``). With ``norm="pre"`` each stack ends in one more LayerNorm
  (``ln_f_enc``, ``ln_f_dec``), without which the residual stream would reach the cross-attention and the output
  projection unnormalised (GPT-2 and PyTorch's ``norm_first`` models do the same).
- The decoder's self-attention is causal: target position t sees positions <= t. Padding masks (True = a real
  token, False = padding) remove padded keys from every attention that reads them.
- Dropout (paper §5.4, :math:`P_{drop} = 0.1` in the base model, ``config.p_drop``) on the sum of the embeddings and
  the positions in both stacks, and on every sublayer's output before its residual sum
  (``reference/models/layers.py``). It is on only in training: ``forward(..., training=True, rng=rng)``. The masks
  are drawn from ``rng`` in a fixed order (source embeddings, the encoder's layers, target embeddings, the decoder's
  layers), so a generator in the same state replays them. ``training=False`` (the default) is the evaluation model,
  deterministic, and computes exactly what it computed before dropout existed.
- The loss is the caller's: ``reference/ops/cross_entropy.py``, or ``reference/ops/label_smoothing.py`` with the
  paper's :math:`\epsilon_{ls} = 0.1`.
- :func:`encode` and :func:`decode` are the two halves of :func:`forward`, for greedy decoding
  (``reference/inference/seq2seq.py``), which encodes the source once and runs the decoder on a growing target;
  :func:`cross_attention` reads the decoder's cross-attention weights (the learned alignment) from a cache.

Parameters (nested dicts; gradients come back with the same nesting)::

    {"wte_src": (V_src, C), "wte_tgt": (V_tgt, C),
     "encoder": [encoder layer params] * N,  "decoder": [decoder layer params] * N,   (see reference/models/layers.py)
     "ln_f_enc": {gamma, beta}, "ln_f_dec": {gamma, beta}}                                  (pre-LN only)

Initialisation (:func:`init_params`, all through ``reference/training/init.py``):

- attention ``Wq, Wk, Wv, Wo`` and FFN ``W1, W2``: Xavier uniform, :math:`\operatorname{Var} = 2/(n_\text{in} +
  n_\text{out})`, as in the paper's reference implementation (tensor2tensor) and the Annotated Transformer;
- all biases zero; LayerNorm gamma one and beta zero;
- embeddings: normal with std :math:`d_\text{model}^{-1/2}`, so that :math:`\sqrt{d_\text{model}}\,E` has unit
  variance, the same scale as the sinusoids it is added to, and the tied logits :math:`h E^\top` (with
  :math:`h` LayerNorm-ed, :math:`\|h\|^2 \approx d_\text{model}`) start with unit variance.
"""
import dataclasses
import math
from typing import NamedTuple

import numpy as np

from reference._checks import FLOAT_DTYPES, check_choice, check_float, check_ids, check_shape
from reference.models import layers
from reference.ops import activations, attention, dropout, embedding, layernorm, linear, multihead, positional
from reference.training import init


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Sizes and options of the encoder-decoder Transformer; defaults are the paper's base model.

    Attributes
    ----------
    src_vocab_size, tgt_vocab_size : int
        V_src and V_tgt.
    d_model : int
        C. Must be divisible by ``n_head``.
    n_head : int
        H; each head has d_k = d_model / n_head.
    n_layer : int
        N, the number of layers in each stack.
    d_ff : int
        Width of the FFN's hidden layer.
    norm : {"post", "pre"}
    activation : {"relu", "gelu", "gelu_tanh"}
    ln_eps : float
    p_drop : float in [0, 1)
        Dropout rate in training (``forward(..., training=True)``); evaluation ignores it.
    """

    src_vocab_size: int
    tgt_vocab_size: int
    d_model: int = 512
    n_head: int = 8
    n_layer: int = 6
    d_ff: int = 2048
    norm: str = "post"
    activation: str = "relu"
    ln_eps: float = 1e-5
    p_drop: float = 0.1

    def __post_init__(self):
        for name in ("src_vocab_size", "tgt_vocab_size", "d_model", "n_head", "n_layer", "d_ff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"TransformerConfig.{name}: expected a positive integer, got {value!r}")
        if self.d_model % self.n_head != 0:
            raise ValueError(f"TransformerConfig: d_model = {self.d_model} is not divisible by n_head = "
                             f"{self.n_head} (each head needs d_k = d_model / n_head)")
        if self.norm not in layers.NORMS:
            raise ValueError(f"TransformerConfig.norm: expected one of {layers.NORMS}, got {self.norm!r}")
        check_choice("TransformerConfig.activation", self.activation, tuple(activations.ACTIVATIONS))
        if not (isinstance(self.ln_eps, (int, float)) and math.isfinite(self.ln_eps) and self.ln_eps > 0):
            raise ValueError(f"TransformerConfig.ln_eps: expected a positive number, got {self.ln_eps!r}")
        if isinstance(self.p_drop, bool) or not isinstance(self.p_drop, (int, float)) \
                or not 0.0 <= self.p_drop < 1.0:
            raise ValueError(f"TransformerConfig.p_drop: expected a number in [0, 1), got {self.p_drop!r}")


class EncoderCache(NamedTuple):
    embed: tuple                                # _embed_forward's cache (lookup, scale, dropout)
    layers: list                                # one layers.EncoderLayerCache per layer
    ln_f: tuple                                 # ln_f_enc's cache (pre-LN), else None


class DecoderCache(NamedTuple):
    embed: tuple
    layers: list                                # one layers.DecoderLayerCache per layer
    ln_f: tuple                                 # ln_f_dec's cache (pre-LN), else None
    out: tuple                                  # the tied output projection's cache
    memory_shape: tuple                         # (B, S, C)


class TransformerCache(NamedTuple):
    encoder: EncoderCache
    decoder: DecoderCache


def _attention_params(C, rng, dtype):
    p = {name: init.xavier_uniform((C, C), rng, dtype=dtype) for name in ("Wq", "Wk", "Wv", "Wo")}
    p.update({name: np.zeros(C, dtype=dtype) for name in ("bq", "bk", "bv", "bo")})
    return p


def _ln_params(C, dtype):
    return {"gamma": np.ones(C, dtype=dtype), "beta": np.zeros(C, dtype=dtype)}


def _ffn_params(C, d_ff, rng, dtype):
    return {"W1": init.xavier_uniform((C, d_ff), rng, dtype=dtype), "b1": np.zeros(d_ff, dtype=dtype),
            "W2": init.xavier_uniform((d_ff, C), rng, dtype=dtype), "b2": np.zeros(C, dtype=dtype)}


def init_params(config, rng, dtype=np.float64):
    """Fresh parameters for ``config`` (the scheme is in the module docstring).

    Parameters
    ----------
    config : TransformerConfig
    rng : numpy.random.Generator
    dtype : float32 or float64, default float64

    Returns
    -------
    params : dict (nesting in the module docstring)
    """
    _check_config(config)
    dtype = np.dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    C, N = config.d_model, config.n_layer
    emb_std = C ** -0.5
    params = {
        "wte_src": init.normal((config.src_vocab_size, C), rng, std=emb_std, dtype=dtype),
        "wte_tgt": init.normal((config.tgt_vocab_size, C), rng, std=emb_std, dtype=dtype),
        "encoder": [{"attn": _attention_params(C, rng, dtype), "ln1": _ln_params(C, dtype),
                     "ffn": _ffn_params(C, config.d_ff, rng, dtype), "ln2": _ln_params(C, dtype)}
                    for _ in range(N)],
        "decoder": [{"attn": _attention_params(C, rng, dtype), "ln1": _ln_params(C, dtype),
                     "cross_attn": _attention_params(C, rng, dtype), "ln2": _ln_params(C, dtype),
                     "ffn": _ffn_params(C, config.d_ff, rng, dtype), "ln3": _ln_params(C, dtype)}
                    for _ in range(N)],
    }
    if config.norm == "pre":
        params["ln_f_enc"] = _ln_params(C, dtype)
        params["ln_f_dec"] = _ln_params(C, dtype)
    return params


def _check_config(config):
    if not isinstance(config, TransformerConfig):
        raise TypeError(f"config: expected a TransformerConfig, got {type(config).__name__}")


def _check_ids(name, ids, vocab_size):
    check_ids(name, ids, vocab_size)
    if ids.ndim != 2:
        raise ValueError(f"{name}: expected shape (B, T), got {ids.shape}")


def _check_pad_mask(name, mask, shape):
    if mask is None:
        return
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        got = mask.dtype if isinstance(mask, np.ndarray) else type(mask).__name__
        raise TypeError(f"{name}: expected a boolean numpy.ndarray (True = real token, False = padding), got {got}")
    check_shape(name, mask, shape)


def _embed_forward(ids, E, p_drop, rng):
    """x = Drop(sqrt(C) E[ids] + PE[:T]).   ids (B, T) -> x (B, T, C)."""
    T, C = ids.shape[1], E.shape[1]
    scale = E.dtype.type(math.sqrt(C))                       # in E's dtype: no promotion of float32
    e, c_emb = embedding.forward(ids, E)                     # (B, T, C)
    x = scale * e + positional.sinusoidal(T, C, dtype=E.dtype)   # (B, T, C) + (T, C)
    c_drop = None
    if p_drop != 0:
        x, c_drop = dropout.forward(x, p_drop, rng=rng)
    return x, (c_emb, scale, c_drop)


def _embed_backward(dx, cache):
    c_emb, scale, c_drop = cache
    if c_drop is not None:
        # forward: x = Drop(x_0)
        dx = dropout.backward(dx, c_drop)
    # forward: x_0 = scale * E[ids] + PE   (PE is a constant)
    return embedding.backward(scale * dx, c_emb)             # (V, C)


def _dropout_rate(config, training, rng):
    """The dropout rate this call runs with: config.p_drop in training, 0 in evaluation."""
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"training: expected a bool, got {type(training).__name__}")
    p_drop = config.p_drop if training else 0.0
    if p_drop > 0 and not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: training with config.p_drop = {config.p_drop} draws dropout masks and needs a "
                         f"numpy.random.Generator, got {type(rng).__name__}")
    return p_drop


def _check_params(params, config, stack):
    name = {"encoder": "wte_src", "decoder": "wte_tgt"}[stack]
    V = config.src_vocab_size if stack == "encoder" else config.tgt_vocab_size
    check_shape(f"params['{name}']", check_float(f"params['{name}']", params[name]), (V, config.d_model))
    if len(params[stack]) != config.n_layer:
        raise ValueError(f"params['{stack}']: expected {config.n_layer} layers (config.n_layer), "
                         f"got {len(params[stack])}")


def _options(config):
    return {"norm": config.norm, "eps": config.ln_eps, "activation": config.activation}


def encode(params, config, src_ids, src_pad_mask=None, training=False, rng=None):
    """The encoder stack: ``memory``, the sequence the decoder's cross-attention reads.

    Parameters
    ----------
    params : dict from :func:`init_params`
    config : TransformerConfig
    src_ids : int ndarray (B, S)
    src_pad_mask : bool ndarray (B, S), optional
        True = real token, False = padding (hidden from the encoder's self-attention).
    training : bool
        True: dropout with rate ``config.p_drop``, masks drawn from ``rng``.
    rng : numpy.random.Generator, required in training when ``config.p_drop > 0``

    Returns
    -------
    memory : ndarray (B, S, C), the parameters' dtype
    cache : EncoderCache
    """
    _check_config(config)
    _check_params(params, config, "encoder")
    _check_ids("src_ids", src_ids, config.src_vocab_size)
    _check_pad_mask("src_pad_mask", src_pad_mask, src_ids.shape)
    p_drop = _dropout_rate(config, training, rng)
    key_mask = None if src_pad_mask is None else src_pad_mask[:, None, None, :]      # (B, 1, 1, S)
    x, c_embed = _embed_forward(src_ids, params["wte_src"], p_drop, rng)              # (B, S, C)
    caches = []
    for p in params["encoder"]:
        x, c = layers.encoder_layer_forward(x, p, config.n_head, key_mask, **_options(config), p_drop=p_drop, rng=rng)
        caches.append(c)
    c_ln = None
    if config.norm == "pre":
        x, c_ln = layernorm.forward_fast(x, params["ln_f_enc"]["gamma"], params["ln_f_enc"]["beta"], config.ln_eps)
    return x, EncoderCache(c_embed, caches, c_ln)


def decode(params, config, memory, tgt_ids, src_pad_mask=None, tgt_pad_mask=None, training=False, rng=None):
    """The decoder stack and the tied output projection: logits of the next target token at every position.

    Parameters
    ----------
    params : dict from :func:`init_params`
    config : TransformerConfig
    memory : ndarray (B, S, C), from :func:`encode`
    tgt_ids : int ndarray (B, T)
        The decoder's input (the target shifted right, starting with a start token).
    src_pad_mask : bool ndarray (B, S), optional
        Hides padded source positions from the cross-attention.
    tgt_pad_mask : bool ndarray (B, T), optional
        Hides padded target positions from the decoder's self-attention, on top of the causal mask.
    training : bool
    rng : numpy.random.Generator, required in training when ``config.p_drop > 0``

    Returns
    -------
    logits : ndarray (B, T, V_tgt)
    cache : DecoderCache
    """
    _check_config(config)
    _check_params(params, config, "decoder")
    _check_ids("tgt_ids", tgt_ids, config.tgt_vocab_size)
    check_float("memory", memory)
    (B, T), C = tgt_ids.shape, config.d_model
    if memory.ndim != 3 or memory.shape[0] != B or memory.shape[2] != C:
        raise ValueError(f"memory: expected shape ({B}, S, {C}) for tgt_ids of shape {tgt_ids.shape}, "
                         f"got {memory.shape}")
    _check_pad_mask("src_pad_mask", src_pad_mask, memory.shape[:2])
    _check_pad_mask("tgt_pad_mask", tgt_pad_mask, (B, T))
    p_drop = _dropout_rate(config, training, rng)

    # Masks, True = may attend.
    src_key_mask = None if src_pad_mask is None else src_pad_mask[:, None, None, :]   # (B, 1, 1, S)
    self_mask = attention.causal_mask(T, T)[None, None]                               # (1, 1, T, T)
    if tgt_pad_mask is not None:
        self_mask = self_mask & tgt_pad_mask[:, None, None, :]                         # (B, 1, T, T)

    h, c_embed = _embed_forward(tgt_ids, params["wte_tgt"], p_drop, rng)              # (B, T, C)
    caches = []
    for p in params["decoder"]:
        h, c = layers.decoder_layer_forward(h, memory, p, config.n_head, self_mask, src_key_mask, **_options(config),
                                            p_drop=p_drop, rng=rng)
        caches.append(c)
    c_ln = None
    if config.norm == "pre":
        h, c_ln = layernorm.forward_fast(h, params["ln_f_dec"]["gamma"], params["ln_f_dec"]["beta"], config.ln_eps)
    # Output projection, tied to the target embedding.
    logits, c_out = linear.forward_fast(h, params["wte_tgt"].T)                       # (B, T, V_tgt)
    return logits, DecoderCache(c_embed, caches, c_ln, c_out, memory.shape)


def forward(params, config, src_ids, tgt_ids, src_pad_mask=None, tgt_pad_mask=None, training=False, rng=None):
    """Logits of the next target token at every target position: :func:`encode`, then :func:`decode`.

    Parameters
    ----------
    params : dict from :func:`init_params`
    config : TransformerConfig
    src_ids : int ndarray (B, S)
    tgt_ids : int ndarray (B, T)
        The decoder's input (the target shifted right, starting with a start token).
    src_pad_mask : bool ndarray (B, S), optional
        True = real token, False = padding (PyTorch's ``key_padding_mask`` uses the opposite convention).
        Padded source positions are hidden from the encoder's self-attention and the decoder's cross-attention.
    tgt_pad_mask : bool ndarray (B, T), optional
        Same convention; padded target positions are hidden from the decoder's self-attention, on top of the
        causal mask.
    training : bool, default False
        True: dropout with rate ``config.p_drop`` (module docstring); False: the deterministic evaluation model.
    rng : numpy.random.Generator, required in training when ``config.p_drop > 0``
        Draws every dropout mask of the call, in a fixed order.

    Returns
    -------
    logits : ndarray (B, T, V_tgt), the parameters' dtype
    cache : TransformerCache
    """
    _check_config(config)
    _check_ids("src_ids", src_ids, config.src_vocab_size)
    _check_ids("tgt_ids", tgt_ids, config.tgt_vocab_size)
    if src_ids.shape[0] != tgt_ids.shape[0]:
        raise ValueError(f"src_ids and tgt_ids: expected the same batch size, got {src_ids.shape} and "
                         f"{tgt_ids.shape}")
    memory, c_enc = encode(params, config, src_ids, src_pad_mask, training, rng)      # (B, S, C)
    logits, c_dec = decode(params, config, memory, tgt_ids, src_pad_mask, tgt_pad_mask, training, rng)
    return logits, TransformerCache(c_enc, c_dec)


def backward(dlogits, cache):
    """Gradients of every parameter, given the upstream gradient of the logits.

    Parameters
    ----------
    dlogits : ndarray (B, T, V_tgt)
    cache : TransformerCache, from :func:`forward`

    Returns
    -------
    grads : dict with the nesting of ``params``
    """
    check_float("dlogits", dlogits)
    grads, dmemory = _decode_backward(dlogits, cache.decoder)
    grads.update(_encode_backward(dmemory, cache.encoder))
    return grads


def _decode_backward(dlogits, cache):
    """Gradients of :func:`decode`'s parameters, and of ``memory``."""
    grads = {}
    # forward: logits = h @ wte_tgt.T
    dh, dW_out, _ = linear.backward_fast(dlogits, cache.out)             # (B, T, C), (C, V_tgt)
    if cache.ln_f is not None:
        # forward: h = LN(h_N)
        dh, dgamma, dbeta = layernorm.backward_fast(dh, cache.ln_f)
        grads["ln_f_dec"] = {"gamma": dgamma, "beta": dbeta}

    # forward: h_l = Decoder_l(h_{l-1}, memory): memory feeds every decoder layer, so its gradients add up.
    dmemory = np.zeros(cache.memory_shape, dtype=dh.dtype)               # (B, S, C)
    dec_grads = []
    for c in reversed(cache.layers):
        dh, dm, dp = layers.decoder_layer_backward(dh, c)
        dmemory += dm
        dec_grads.append(dp)
    grads["decoder"] = dec_grads[::-1]
    # wte_tgt is used twice (lookup and output projection): the two gradients add.
    grads["wte_tgt"] = _embed_backward(dh, cache.embed) + dW_out.T       # (V_tgt, C)
    return grads, dmemory


def _encode_backward(dmemory, cache):
    """Gradients of :func:`encode`'s parameters, given the gradient of ``memory``."""
    grads = {}
    dx = dmemory
    if cache.ln_f is not None:
        # forward: memory = LN(x_N)
        dx, dgamma, dbeta = layernorm.backward_fast(dx, cache.ln_f)
        grads["ln_f_enc"] = {"gamma": dgamma, "beta": dbeta}
    enc_grads = []
    for c in reversed(cache.layers):
        # forward: x_l = Encoder_l(x_{l-1})
        dx, dp = layers.encoder_layer_backward(dx, c)
        enc_grads.append(dp)
    grads["encoder"] = enc_grads[::-1]
    grads["wte_src"] = _embed_backward(dx, cache.embed)                  # (V_src, C)
    return grads


def cross_attention(cache):
    """The decoder's cross-attention weights, one array (B, H, T, S) per decoder layer, from a forward cache.

    Row ``[b, h, t, :]`` is how target position t of example b spreads head h's attention over the source
    positions (it sums to 1 over the real ones). ``cache`` is a :class:`TransformerCache` or a
    :class:`DecoderCache`. Copies, so that changing them leaves the cache (and a backward from it) intact.
    """
    dec = cache.decoder if isinstance(cache, TransformerCache) else cache
    if not isinstance(dec, DecoderCache):
        raise TypeError(f"cache: expected a TransformerCache or DecoderCache, got {type(cache).__name__}")
    return [multihead.attention_probs(c.cross_attn.sub).copy() for c in dec.layers]
