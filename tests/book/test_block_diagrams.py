"""book/block_diagrams.py: each column's residual skips end in a sum, its repeated block lies inside the column, and
the pair draws."""
import matplotlib

matplotlib.use("Agg")

from book import block_diagrams  # noqa: E402


def test_columns_are_well_formed():
    for column in (block_diagrams.transformer_2017(), block_diagrams.llama()):
        n = len(column.steps)
        for a, b in column.skips:
            assert 0 <= a < b < n and column.steps[b].kind == "add", (column.title, a, b)
        lo, hi = column.repeat
        assert 0 < lo <= hi < n - 1
        assert all(s.kind in block_diagrams.COLORS or s.kind == "add" for s in column.steps)
    assert not any(s.new for s in block_diagrams.transformer_2017().steps)     # "new" marks changes since 2017


def test_the_pair_draws(tmp_path):
    fig = block_diagrams.draw_pair(block_diagrams.transformer_2017(), block_diagrams.llama())
    fig.savefig(tmp_path / "pair.png", dpi=60)
    assert (tmp_path / "pair.png").stat().st_size > 10_000
