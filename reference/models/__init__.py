"""Models built from the ops: the encoder and decoder layers, the 2017 encoder-decoder, GPT, BERT and three classifiers.

``layers`` and ``transformer`` are the paper (chapter 6); ``gpt`` is the decoder-only language model that the book
trains (chapter 2) and studies (chapters 3, 4, 9); ``bert`` runs the pretrained MiniLM (chapter 8); ``classifier``
against ``logreg`` and ``linear_svm`` is chapter 5.
"""
