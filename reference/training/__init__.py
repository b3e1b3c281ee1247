"""Training: the corpus and its batches, initialisation, optimizers and schedules, checkpoints, classification tasks,
the digit-reversal task of the encoder-decoder (``seq2seq``); and training at scale: mixed precision
(``precision``), data parallelism and gradient accumulation (``data_parallel``), the sharded optimizer state of ZeRO
stage 1 (``zero``), over torch.distributed (``distributed``, the package's one module that imports torch).

The training command itself is ``python -m reference.train`` (``reference/train.py``); chapter 2 walks through it.
"""
