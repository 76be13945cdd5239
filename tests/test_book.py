"""medvlp_lib.book: legible figures and the ledger's table."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from medvlp_lib import book  # noqa: E402


def _shown_px(png: bytes) -> float:
    """The smallest font of a figure_png PNG as the book's column shows it, from the PNG alone."""
    import io

    from PIL import Image
    image = Image.open(io.BytesIO(png))
    pt, dpi = float(image.text["medvlp-min-font-pt"]), float(image.text["medvlp-dpi"])
    return pt * dpi / 72 * min(1.0, book.COLUMN_PX / image.size[0])


def test_legible_scale_follows_the_column_arithmetic():
    fig, ax = plt.subplots(figsize=(14, 3), dpi=100)
    ax.set_title("t", fontsize=7)
    ax.tick_params(labelsize=7)
    width = book.drawn_width_in(fig) * 100
    assert book.legible_scale(fig) == pytest.approx(9 / (7 * 100 / 72 * book.COLUMN_PX / width))
    small, ax2 = plt.subplots(figsize=(5, 3), dpi=100)
    ax2.set_title("t", fontsize=7)
    ax2.tick_params(labelsize=7)
    assert book.legible_scale(small) == 1.0  # about 500 px is shown at full size: 7 pt = 9.7 px
    huge, ax3 = plt.subplots(figsize=(40, 3), dpi=100)
    ax3.set_title("t", fontsize=6)
    assert book.legible_scale(huge) == book.MAX_TEXT_SCALE
    plt.close("all")


def test_figure_png_enlarges_ticks_titles_and_legends_alike():
    fig, axes = plt.subplots(1, 4, figsize=(14, 3), dpi=100)
    for ax in axes:
        ax.plot([0, 1], [0, 1], label="a line")
        ax.set_title("title", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    png = book.figure_png(fig)
    k = axes[0].title.get_fontsize() / 8
    assert k > 1.5
    assert axes[1].xaxis.get_major_ticks()[0].label1.get_fontsize() == pytest.approx(7 * k)
    assert axes[0].get_legend().get_texts()[0].get_fontsize() == pytest.approx(7 * k)
    assert _shown_px(png) >= book.MIN_FONT_PX - 0.05


def test_figure_png_measures_the_png_it_draws_not_the_figure_size():
    """Text outside the axes widens what bbox 'tight' saves beyond the figure; the scale accounts for it."""
    fig, ax = plt.subplots(figsize=(9, 3), dpi=100)
    ax.plot([0, 1], [0, 1], label="a long legend entry placed outside the axes")
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7)
    ax.tick_params(labelsize=7)
    assert book.drawn_width_in(fig) > 9.5
    assert _shown_px(book.figure_png(fig)) >= book.MIN_FONT_PX - 0.05
    plt.close(fig)


def _ledger():
    return pd.DataFrame({
        "paper": ["MSD+RFBE", "MoMKD", "MSD+RFBE"], "chapter": ["02", "05", "04"],
        "claim": ["MSD beats <MM-MoCo>", "memory helps", "flat memory"],
        "paper's number": ["3.5", "79.6", "9 GB"], "ours": ["0.8", "69.9", "309 MB"],
        "verdict": ["not reproduced", "reproduced", "reproduced"],
        "explanation": ["the gap is within noise", "", "x1.16"]},
        index=pd.Index(["msd-vs-mmmoco", "momkd-beats", "rfbe-memory"], name="id"))


def test_verdict_table_groups_by_paper_colours_verdicts_and_puts_explanations_in_toggles():
    html = book.verdict_table_html(_ledger())
    assert html.count('class="medvlp-group"') == 2  # MSD+RFBE once (its rows kept together), MoMKD once
    assert html.index("flat memory") < html.index("memory helps")
    assert f"background:{book.VERDICT_COLOURS['not reproduced']}" in html
    assert "MSD beats &lt;MM-MoCo&gt;" in html  # escaped
    assert html.count("<details>") == 2  # the row without an explanation has no toggle
    assert "chapter 02" in html and "<code>msd-vs-mmmoco</code>" in html
    with pytest.raises(KeyError, match="verdict"):
        book.verdict_table_html(_ledger().drop(columns="verdict"))


def test_collapsed_holds_tables_and_text_behind_a_summary():
    out = book.collapsed("bench_x: python -m benchmarks.bench_x", pd.DataFrame({"a": [1]}), {"k": "v"})
    assert out.data.startswith('<details class="medvlp-collapsed"><summary>bench_x: python -m benchmarks.bench_x')
    assert "<table" in out.data and "{&#x27;k&#x27;: &#x27;v&#x27;}" in out.data
