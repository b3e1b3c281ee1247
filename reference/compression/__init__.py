"""Making a trained model smaller (material §2.2, chapter 3): ``quantize``, ``qat``, ``prune`` and ``distill``."""
