from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest

from medvlp_lib.viz import bar_with_errors, image_grid, loss_curves


def test_image_grid_with_masks_and_captions():
    imgs = [np.random.rand(16, 16) for _ in range(3)]
    masks = [np.zeros((16, 16), bool), None, np.ones((16, 16), bool)]
    fig = image_grid(imgs, titles=["a", "b", "c"], captions=["x" * 80] * 3, masks=masks, ncols=2)
    assert len(fig.axes) == 4


def test_image_grid_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="titles has 1 entries but there are 2 images"):
        image_grid([np.zeros((4, 4))] * 2, titles=["only one"])


def test_loss_curves_and_bars():
    fig = loss_curves({"b16": [[3, 2, 1], [3, 2.5, 1.5]], "b128": [3, 1, 0.5]})
    assert fig.axes[0].get_legend() is not None
    fig = bar_with_errors({"R@1": {"b16": {"mean": 0.1, "std": 0.01, "values": [0.09, 0.11]},
                                   "b128": {"mean": 0.2, "std": 0.02, "values": [0.18, 0.22]}}})
    assert len(fig.axes[0].patches) == 2


def test_sweep_plot_draws_means_and_seed_points():
    from medvlp_lib.viz.plots import sweep_plot
    entries = [{"mean": 0.6, "std": 0.01, "values": [0.59, 0.6, 0.61]}, {"mean": 0.7, "std": 0.02, "values": [0.68, 0.7, 0.72]}]
    fig = sweep_plot([1, 10], entries, label="msd", logx=True, xticklabels=["1", "10"], scale=100)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert len(ax.collections) >= 2  # one scatter of seed values per knob value
    with pytest.raises(ValueError, match="same length"):
        sweep_plot([1, 2, 3], entries)


def test_variant_table_formats_mean_std_and_names_missing_keys():
    from medvlp_lib.experiments import variant_table
    rec = {"experiment": "x", "per_seed": {"0": {"a": {}, "b": {}}},
           "summary": {"a/auc": {"mean": 0.61, "std": 0.02, "n": 3}, "b/auc": {"mean": 0.7, "std": 0.0, "n": 3}}}
    table = variant_table(rec, ["auc"])
    assert list(table.index) == ["a", "b"] and table.loc["a", "auc"] == "61.0 ± 2.0"
    with pytest.raises(KeyError, match="b/r1"):
        variant_table(rec, ["r1"], variants=["b"])


def test_late_mean_averages_the_last_fifth_over_seeds():
    from medvlp_lib.experiments import late_mean
    rec = {"per_seed": {"0": {"a": {"curves": {"u": [9.0] * 8 + [1.0, 3.0]}}},
                        "1": {"a": {"curves": {"u": [9.0] * 8 + [5.0, 7.0]}}}}}
    assert late_mean(rec, "a", "u") == 4.0


def test_binned_curve_averages_equal_bins_and_skips_missing_keys():
    from medvlp_lib.experiments import binned_curve

    hist = [{"loss": float(i)} for i in range(8)] + [{"other": 1.0}]
    assert binned_curve(hist, points=4) == [0.5, 2.5, 4.5, 6.5]
    assert binned_curve(hist, points=20) == [float(i) for i in range(8)]  # short histories stay unbinned
    assert binned_curve(hist, key="other") == [1.0]


def test_forest_plot_draws_each_paired_claim_with_its_interval_effect_and_margin():
    import math

    from medvlp_lib.viz import VERDICT_COLOURS, forest_plot

    rows = [
        {"id": "a", "verdict": "reproduced", "diff": 3.0, "lo": 1.0, "hi": 5.0, "effect": 2.0, "margin": math.nan,
         "n": 5, "unit": "AUC points"},
        {"id": "b", "verdict": "inconclusive", "diff": 0.5, "lo": -2.0, "hi": 3.0, "effect": 2.0, "margin": 2.0,
         "n": 5, "unit": "AUC points"},
        {"id": "c", "verdict": "pending", "diff": math.nan, "lo": math.nan, "hi": math.nan, "effect": math.nan,
         "margin": math.nan, "n": 0, "unit": ""},
    ]
    fig = forest_plot(rows)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a (n=5, AUC points)", "b (n=5, AUC points)"]
    assert "not shown (1): c" in ax.get_title(loc="left")
    lines = ax.get_lines()
    intervals = [tuple(l.get_xdata()) for l in lines if l.get_linestyle() == "-" and len(l.get_xdata()) == 2
                 and l.get_xdata()[0] != l.get_xdata()[1]]
    assert (1.0, 5.0) in intervals and (-2.0, 3.0) in intervals
    crosses = [l for l in lines if l.get_marker() == "x"]
    assert [float(l.get_xdata()[0]) for l in crosses] == [2.0, 2.0]
    assert any(l.get_linestyle() == "--" and list(l.get_xdata()) == [-2.0, -2.0] for l in lines)
    dots = {l.get_color() for l in lines if l.get_marker() == "o" and len(l.get_xdata()) == 1}
    assert dots == {VERDICT_COLOURS["reproduced"], VERDICT_COLOURS["inconclusive"]}
    matplotlib.pyplot.close(fig)
