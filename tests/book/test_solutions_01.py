"""The worked solutions of chapter 1's exercises (chapters/solutions/01_background.py)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from reference.models import transformer

_PATH = Path(__file__).resolve().parents[2] / "chapters" / "solutions" / "01_background.py"
_spec = importlib.util.spec_from_file_location("solutions_01", _PATH)  # the file name starts with a digit
sol = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sol)


def _count(tree):
    if isinstance(tree, dict):
        return sum(_count(v) for v in tree.values())
    if isinstance(tree, list):
        return sum(_count(v) for v in tree)
    return tree.size


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_encoder_decoder_count_matches_the_reference_model(norm):
    config = transformer.TransformerConfig(src_vocab_size=13, tgt_vocab_size=17, d_model=16, n_head=2,
                                           n_layer=2, d_ff=24, norm=norm)
    params = transformer.init_params(config, np.random.default_rng(0))
    assert sol.encoder_decoder_params(2, 16, 24, 13, 17, norm=norm) == _count(params)  # exact: a count


def test_transformer_base_is_63_million():
    assert round(sol.transformer_base_params() / 1e6, 1) == 63.1


def test_chinchilla_optimal_size():
    n, d = sol.chinchilla_optimal(1e21)
    assert 6 * n * d == pytest.approx(1e21, rel=1e-12)  # it spends exactly the budget
    assert round(n / 1e9, 1) == 2.9 and round(d / 1e9) == 58


def test_gpt3_kv_cache():
    assert round(sol.gpt3_kv_cache_gib(), 1) == 9.0
