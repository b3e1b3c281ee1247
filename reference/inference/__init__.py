"""Using trained models: ``decoding`` (KV cache, greedy, sampling, beam search; chapter 4), ``seq2seq`` (greedy
decoding of the encoder-decoder; chapter 6) and ``summarizer`` (chapter 8).

The summariser's command is ``python -m reference.summarize`` (``reference/summarize.py``).
"""
