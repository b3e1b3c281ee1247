"""Training: the corpus and its batches, initialisation, optimizers and schedules, checkpoints, classification tasks,
and the digit-reversal task of the encoder-decoder (``seq2seq``).

The training command itself is ``python -m reference.train`` (``reference/train.py``); chapter 2 walks through it.
"""
