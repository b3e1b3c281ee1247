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
- No dropout and no label smoothing: the reference is deterministic; the loss is the caller's
  (``reference/ops/cross_entropy.py``).

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

import numpy as np

from reference._checks import FLOAT_DTYPES, check_choice, check_float, check_ids, check_shape
from reference.models import layers
from reference.ops import activations, attention, embedding, layernorm, linear, positional
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


def _embed_forward(ids, E):
    """x = sqrt(C) E[ids] + PE[:T].   ids (B, T) -> x (B, T, C)."""
    T, C = ids.shape[1], E.shape[1]
    scale = E.dtype.type(math.sqrt(C))                       # in E's dtype: no promotion of float32
    e, c_emb = embedding.forward(ids, E)                     # (B, T, C)
    x = scale * e + positional.sinusoidal(T, C, dtype=E.dtype)   # (B, T, C) + (T, C)
    return x, (c_emb, scale)


def _embed_backward(dx, cache):
    c_emb, scale = cache
    # forward: x = scale * E[ids] + PE   (PE is a constant)
    return embedding.backward(scale * dx, c_emb)             # (V, C)


def forward(params, config, src_ids, tgt_ids, src_pad_mask=None, tgt_pad_mask=None):
    """Logits of the next target token at every target position.

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

    Returns
    -------
    logits : ndarray (B, T, V_tgt), the parameters' dtype
    cache : tuple
    """
    _check_config(config)
    for name, V in (("wte_src", config.src_vocab_size), ("wte_tgt", config.tgt_vocab_size)):
        check_shape(f"params['{name}']", check_float(f"params['{name}']", params[name]), (V, config.d_model))
    _check_ids("src_ids", src_ids, config.src_vocab_size)
    _check_ids("tgt_ids", tgt_ids, config.tgt_vocab_size)
    if src_ids.shape[0] != tgt_ids.shape[0]:
        raise ValueError(f"src_ids and tgt_ids: expected the same batch size, got {src_ids.shape} and "
                         f"{tgt_ids.shape}")
    (B, S), T = src_ids.shape, tgt_ids.shape[1]
    _check_pad_mask("src_pad_mask", src_pad_mask, (B, S))
    _check_pad_mask("tgt_pad_mask", tgt_pad_mask, (B, T))
    for stack in ("encoder", "decoder"):
        if len(params[stack]) != config.n_layer:
            raise ValueError(f"params['{stack}']: expected {config.n_layer} layers (config.n_layer), "
                             f"got {len(params[stack])}")
    opts = {"norm": config.norm, "eps": config.ln_eps, "activation": config.activation}

    # Masks, True = may attend.
    src_key_mask = None if src_pad_mask is None else src_pad_mask[:, None, None, :]   # (B, 1, 1, S)
    self_mask = attention.causal_mask(T, T)[None, None]                               # (1, 1, T, T)
    if tgt_pad_mask is not None:
        self_mask = self_mask & tgt_pad_mask[:, None, None, :]                         # (B, 1, T, T)

    # Encoder.
    x, c_src = _embed_forward(src_ids, params["wte_src"])                             # (B, S, C)
    enc_caches = []
    for p in params["encoder"]:
        x, c = layers.encoder_layer_forward(x, p, config.n_head, src_key_mask, **opts)
        enc_caches.append(c)
    c_enc_ln = None
    if config.norm == "pre":
        x, c_enc_ln = layernorm.forward_fast(x, params["ln_f_enc"]["gamma"], params["ln_f_enc"]["beta"], config.ln_eps)
    memory = x                                                                        # (B, S, C)

    # Decoder.
    h, c_tgt = _embed_forward(tgt_ids, params["wte_tgt"])                             # (B, T, C)
    dec_caches = []
    for p in params["decoder"]:
        h, c = layers.decoder_layer_forward(h, memory, p, config.n_head, self_mask, src_key_mask, **opts)
        dec_caches.append(c)
    c_dec_ln = None
    if config.norm == "pre":
        h, c_dec_ln = layernorm.forward_fast(h, params["ln_f_dec"]["gamma"], params["ln_f_dec"]["beta"], config.ln_eps)

    # Output projection, tied to the target embedding.
    logits, c_out = linear.forward_fast(h, params["wte_tgt"].T)                            # (B, T, V_tgt)
    cache = (c_src, enc_caches, c_enc_ln, memory.shape, c_tgt, dec_caches, c_dec_ln, c_out)
    return logits, cache


def backward(dlogits, cache):
    """Gradients of every parameter, given the upstream gradient of the logits.

    Parameters
    ----------
    dlogits : ndarray (B, T, V_tgt)
    cache : from :func:`forward`

    Returns
    -------
    grads : dict with the nesting of ``params``
    """
    c_src, enc_caches, c_enc_ln, memory_shape, c_tgt, dec_caches, c_dec_ln, c_out = cache
    check_float("dlogits", dlogits)
    grads = {}

    # forward: logits = h @ wte_tgt.T
    dh, dW_out, _ = linear.backward_fast(dlogits, c_out)             # (B, T, C), (C, V_tgt)
    if c_dec_ln is not None:
        # forward: h = LN(h_N)
        dh, dgamma, dbeta = layernorm.backward_fast(dh, c_dec_ln)
        grads["ln_f_dec"] = {"gamma": dgamma, "beta": dbeta}

    # forward: h_l = Decoder_l(h_{l-1}, memory): memory feeds every decoder layer, so its gradients add up.
    dmemory = np.zeros(memory_shape, dtype=dh.dtype)            # (B, S, C)
    dec_grads = []
    for c in reversed(dec_caches):
        dh, dm, dp = layers.decoder_layer_backward(dh, c)
        dmemory += dm
        dec_grads.append(dp)
    grads["decoder"] = dec_grads[::-1]
    # wte_tgt is used twice (lookup and output projection): the two gradients add.
    grads["wte_tgt"] = _embed_backward(dh, c_tgt) + dW_out.T    # (V_tgt, C)

    dx = dmemory
    if c_enc_ln is not None:
        # forward: memory = LN(x_N)
        dx, dgamma, dbeta = layernorm.backward_fast(dx, c_enc_ln)
        grads["ln_f_enc"] = {"gamma": dgamma, "beta": dbeta}
    enc_grads = []
    for c in reversed(enc_caches):
        # forward: x_l = Encoder_l(x_{l-1})
        dx, dp = layers.encoder_layer_backward(dx, c)
        enc_grads.append(dp)
    grads["encoder"] = enc_grads[::-1]
    grads["wte_src"] = _embed_backward(dx, c_src)               # (V_src, C)
    return grads
