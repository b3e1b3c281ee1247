"""LM Primer's NumPy reference: every equation of the book, with its hand-written backward pass.

NumPy only: nothing in this package imports torch or triton. Every op takes float32 or float64 arrays and returns
its input's dtype; every backward pass is checked against float64 finite differences and PyTorch in ``tests/``.

The map (folder, what it holds, the chapter that explains it):

=================  ==========================================================================  ==============
``ops/``           one module per equation: linear, embedding, activations, softmax,           ch. 6, 7
                   cross_entropy, layernorm, positional, attention, multihead, ffn, dropout,
                   label_smoothing, and ``as_written``, ``as_written_parts`` (the material's
                   printed formulas, whole and one error at a time, to show their errors)
``models/``        blocks and models built from the ops: ``layers`` (encoder/decoder layer),   ch. 2, 5, 6, 8
                   ``transformer`` (the 2017 encoder-decoder), ``gpt`` (decoder-only LM),
                   ``bert`` (MiniLM encoder), ``classifier``, ``logreg``, ``linear_svm``
``tokenizers/``    characters with byte fallback, byte-level BPE, BERT's WordPiece              ch. 2, 8
``training/``      corpus and batches (``data``), ``init``, ``optim`` (AdamW, schedules,         ch. 2, 5
                   clipping), ``checkpoint``, the text-classification tasks (``textcls``),
                   the digit-reversal task of the encoder-decoder (``seq2seq``)
``inference/``     ``decoding`` (KV cache, greedy, sampling, beam search), ``summarizer``        ch. 4, 8
``compression/``   ``quantize``, ``qat``, ``prune``, ``distill``                                 ch. 3
``studies/``       ``counting`` (parameters, FLOPs, memory), ``scaling_law`` (timed runs and     ch. 1, 4, 9, 11
                   the power-law fit), ``depth`` (gradients through deep stacks),
                   ``attention_heads`` (what a trained GPT's heads attend to),
                   ``regularisation`` (LayerNorm and dropout against overfitting)
=================  ==========================================================================  ==============

Shared helpers: ``tree`` (nested parameter trees and their flat ``{"blocks.0.attn.Wq": W}`` view), ``gradcheck``
(finite-difference checks that the tests and chapters use) and ``_checks`` (argument checks with clear errors).

The commands, at the top level:

- ``python -m reference.train`` (also ``lm-primer-train``): train the GPT on the King James Bible;
- ``python -m reference.summarize FILE``: an extractive summary with the NumPy MiniLM.
"""
