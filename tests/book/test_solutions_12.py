"""The worked solutions of chapter 12's exercises (chapters/solutions/12_modern_decoders.py). Budget: under 1 s."""
import importlib.util
from pathlib import Path

import numpy as np

from reference.ops import rope

_PATH = Path(__file__).resolve().parents[2] / "chapters" / "solutions" / "12_modern_decoders.py"
_spec = importlib.util.spec_from_file_location("solutions_12", _PATH)  # the file name starts with a digit
sol = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sol)


def test_interleaved_weights_converted_give_the_same_scores(rng):
    C, H, d, T = 16, 2, 8, 6
    x = rng.standard_normal((T, C))
    Wq, Wk = rng.standard_normal((2, C, H * d))
    pos = np.arange(T)

    def scores(Wq, Wk, layout):
        q = (x @ Wq).reshape(T, H, d).transpose(1, 0, 2)                # (H, T, d)
        k = (x @ Wk).reshape(T, H, d).transpose(1, 0, 2)
        q, _ = rope.forward(q, pos, layout=layout)
        k, _ = rope.forward(k, pos, layout=layout)
        return q @ k.transpose(0, 2, 1)                                 # (H, T, T)

    meta = scores(Wq, Wk, "interleaved")
    hf = scores(sol.interleaved_to_half(Wq, H), sol.interleaved_to_half(Wk, H), "half")
    # the same products summed in another channel order: float64 round-off ~1e-15
    np.testing.assert_allclose(hf, meta, rtol=0, atol=1e-12)
    assert np.abs(scores(Wq, Wk, "half") - meta).max() > 1e-2         # without the conversion: different


def test_llama3_70b_kv_cache():
    assert sol.kv_cache_gib(80, 8, 128, 16 * 8192) == 40.0
    assert sol.kv_cache_gib(80, 64, 128, 16 * 8192) == 320.0


def test_mixtral_8x7b_counts():
    _, total, active = sol.mixtral_8x7b()
    # Mistral AI's published figures: 46.7 B parameters, 12.9 B active
    assert round(total / 1e9, 1) == 46.7 and round(active / 1e9, 1) == 12.9
