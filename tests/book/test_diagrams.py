"""book/diagrams.py: every box names a module that exists and a chapter that exists; the drawing runs."""
import re
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from book import diagrams

ROOT = Path(__file__).resolve().parents[2]
CHAPTERS = {int(p.name[:2]) for p in (ROOT / "chapters").glob("[0-9][0-9]_*.py")}
MODELS = [diagrams.gpt_block, diagrams.encoder_decoder, diagrams.bert_encoder]


@pytest.mark.parametrize("make", MODELS, ids=lambda f: f.__name__)
def test_every_box_names_a_module_and_chapters_that_exist(make):
    d = make()
    missing = [m for m in diagrams.modules(d) if not (ROOT / "reference" / m).exists()]
    assert not missing, f"{make.__name__}: boxes name reference/ modules that do not exist: {missing}"
    cited = {int(n) for b in d.boxes for n in re.findall(r"\d+", b.chapters)}
    cited |= {int(n) for f in d.frames for n in re.findall(r"ch\. ([\d, ]+)", f[4]) for n in re.findall(r"\d+", n)}
    assert cited and cited <= CHAPTERS, f"{make.__name__}: chapters {sorted(cited - CHAPTERS)} do not exist"
    keys = [b.key for b in d.boxes]
    assert len(keys) == len(set(keys))
    for a in d.arrows + d.residuals:
        assert a[0] in keys and a[1] in keys


@pytest.mark.parametrize("make", MODELS, ids=lambda f: f.__name__)
def test_diagrams_draw(make):
    fig = diagrams.draw(make())
    diagrams.legend(fig.axes[0])
    assert len(fig.axes[0].patches) >= len(make().boxes)
    plt.close(fig)


def test_transitive_reduction_keeps_only_direct_prerequisites():
    order = {1: [0], 2: [0, 1], 3: [0, 1, 2], 4: [1]}
    assert diagrams.transitive_reduction(order) == {1: [0], 2: [1], 3: [2], 4: [1]}
    fig = diagrams.reading_order(order, {c: f"c{c}" for c in range(5)})
    plt.close(fig)
