"""LM Primer's NumPy reference: every equation of the book, with its hand-written backward pass.

NumPy only: nothing in this package imports torch or triton, except ``training/distributed.py``, which sends
arrays between processes with torch.distributed (and imports torch only under a launcher). Every op takes float32
or float64 arrays and returns its input's dtype (float16 passes too, for mixed precision); every backward pass is
checked against float64 finite differences and PyTorch in ``tests/``.

The map (folder, what it holds, the chapter that explains it):

=================  ==========================================================================  ==============
``ops/``           one module per equation: linear, embedding, activations, softmax,           ch. 6, 7, 12
                   cross_entropy, layernorm, positional, attention, multihead, ffn, dropout,
                   label_smoothing, and ``as_written``, ``as_written_parts`` (the material's
                   printed formulas, whole and one error at a time, to show their errors);
                   today's decoder: rmsnorm, rope, swiglu, gqa, moe
``models/``        blocks and models built from the ops: ``layers`` (encoder/decoder layer),   ch. 2, 5, 6, 8,
                   ``transformer`` (the 2017 encoder-decoder), ``gpt`` (decoder-only LM:       12
                   GPT-2 and, by its config, the Llama family; Hugging Face's Llama and
                   Mixtral read in), ``bert`` (MiniLM encoder), ``classifier``, ``logreg``,
                   ``linear_svm``
``tokenizers/``    characters with byte fallback, byte-level BPE, BERT's WordPiece; ``hf``     ch. 2, 4, 8
                   writes the first two as Hugging Face ``tokenizer.json``
``training/``      corpus and batches (``data``), ``init``, ``optim`` (AdamW, schedules,       ch. 2, 5, 13
                   clipping), ``checkpoint``, the text-classification tasks (``textcls``), the
                   digit-reversal task of the encoder-decoder (``seq2seq``); for the command:
                   ``run_dir`` (lock, path checks, signals), ``memory`` (estimate), ``trained``
                   (a checkpoint read back as a model); at scale: ``precision`` (fp16/bf16 on
                   float32 masters), ``data_parallel`` (and gradient accumulation), ``zero``
                   (sharded AdamW state), ``recompute`` (activation recomputation),
                   ``tensor_parallel`` (Megatron's f and g), ``blockwise`` (the GPT with its
                   blocks as functions), ``distributed``
``inference/``     ``decoding`` (KV cache, greedy, sampling, beam search), ``summarizer``,     ch. 4, 6, 8
                   ``seq2seq`` (greedy decoding of the encoder-decoder)
``compression/``   ``quantize``, ``qat``, ``prune``, ``distill``                               ch. 3
``studies/``       ``counting`` (parameters, FLOPs, memory), ``scaling_law`` (timed runs and   ch. 1, 4, 9, 11,
                   the power-law fit), ``depth`` (gradients through deep stacks),              13
                   ``attention_heads`` (what a trained GPT's heads attend to),
                   ``regularisation`` (LayerNorm and dropout against overfitting),
                   ``pipeline`` (GPipe and 1F1B schedules simulated), ``sharding`` (what
                   ZeRO, tensor and pipeline parallelism leave on a device; traffic)
=================  ==========================================================================  ==============

Shared helpers: ``tree`` (nested parameter trees and their flat ``{"blocks.0.attn.Wq": W}`` view), ``gradcheck``
(finite-difference checks that the tests and chapters use), ``_checks`` (argument checks with clear errors) and
``_threads`` (the thread count of the fast variants, ``with _threads.using(n):``).

In every ``ops/`` module, ``forward``/``backward`` are the equation as written (the chapters show them), and
``forward_fast``/``backward_fast`` below them compute the same with the speed work (in-place buffers, row blocks,
threads); the models and the benchmarks call the fast ones, and the tests hold each pair equal. Every model speaks
one vocabulary: ``n_layer``, ``n_head``, ``d_model``; parameters ``wte``, ``wpe``, ``blocks`` of ``ln1``, ``attn``,
``ln2``, ``ffn`` (``cross_attn``, ``ln3`` in a decoder layer), ``ln_f``; activations by name from
``ops.activations.ACTIVATIONS``.

The commands, at the top level:

- ``python -m reference.train`` (also ``lm-primer-train``): train the GPT on the King James Bible;
- ``python -m reference.generate CHECKPOINT --prompt TEXT`` (also ``lm-primer-generate``): continue a prompt with a
  trained model, streamed;
- ``python -m reference.export CHECKPOINT OUTDIR`` (also ``lm-primer-export``): the model and its tokenizer in the
  Hugging Face format (GPT-2, Llama or Mixtral), which ``transformers`` loads; ``export.load_pretrained`` reads such a
  folder back;
- ``python -m reference.summarize FILE``: an extractive summary with the NumPy MiniLM.
"""
