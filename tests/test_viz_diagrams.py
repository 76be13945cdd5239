"""medvlp_lib.viz.diagrams: one schematic per method, each drawn without error as a figure."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest
from matplotlib.figure import Figure

from medvlp_lib.viz import diagrams


@pytest.mark.parametrize("name", sorted(diagrams.DIAGRAMS))
def test_each_diagram_draws_a_figure_with_boxes_arrows_and_a_legend(name, tmp_path):
    fig = diagrams.draw(name)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert len(ax.patches) >= 8 and len(texts) >= 5  # boxes + arrows, labels
    assert fig.legends, "the colour code needs its legend"
    assert all(t.get_fontsize() >= 9 for t in ax.texts), "labels must stay legible in the book"
    fig.savefig(tmp_path / f"{name}.png", dpi=60)  # renders (mathtext included) without error
    assert (tmp_path / f"{name}.png").stat().st_size > 5000
    plt.close(fig)


def test_diagram_labels_name_the_method_parts():
    expect = {"clip": ["InfoNCE", "MiniLM"], "msd": ["momentum", "queue", "L_{multi}"],
              "rfbe": ["no_grad", "sub-batch"], "momkd": ["memory", "GATv2", "omics"],
              "vlcd": ["predistillation", "L_{gnd}", "student"], "adaptor": ["cache", "cross-attention", "frozen"]}
    for name, words in expect.items():
        fig = diagrams.draw(name)
        text = " ".join(t.get_text() for t in fig.axes[0].texts) + " " + fig.axes[0].get_title()
        text += " ".join(t.get_text() for leg in fig.legends for t in leg.get_texts())
        for w in words:
            assert w in text, (name, w)
        plt.close(fig)


def test_unknown_names_and_kinds_are_errors():
    with pytest.raises(KeyError, match="no diagram named 'sam'"):
        diagrams.draw("sam")
    c = diagrams._Canvas(4, 2, (4, 2))
    c.box("a", 1, 1, "a")
    with pytest.raises(ValueError, match="unknown box kind"):
        c.box("b", 3, 1, "b", kind="magic")
    with pytest.raises(KeyError, match="not drawn"):
        c.arrow("a", "zzz")
    with pytest.raises(ValueError, match="drawn twice"):
        c.box("a", 1, 1, "a")
    plt.close(c.fig)
