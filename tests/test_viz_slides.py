from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

from medvlp_lib.viz.slides import heatmap_overlay, mask_outline, rank_normalize, scores_to_grid, slide_heatmaps


def _lattice(rows=3, cols=4, patch=16):
    yy, xx = np.divmod(np.arange(rows * cols), cols)
    return np.stack([xx * patch, yy * patch], 1)


def test_scores_to_grid_round_trip_and_extent():
    coords = _lattice()
    scores = np.arange(12.0)
    grid, extent = scores_to_grid(coords, scores, 16)
    assert grid.shape == (3, 4)
    np.testing.assert_array_equal(grid.ravel(), scores)
    assert extent == (0.0, 64.0, 48.0, 0.0)
    # a missing patch is NaN; an offset origin is respected
    grid, extent = scores_to_grid(coords[1:] + 100, scores[1:], 16)
    assert np.isnan(grid[0, 0]) and grid[2, 3] == 11
    assert extent == (100.0, 164.0, 148.0, 100.0)


def test_scores_to_grid_rejects_bad_input():
    with pytest.raises(ValueError, match="3 values but there are 12 patches"):
        scores_to_grid(_lattice(), [1, 2, 3], 16)
    with pytest.raises(ValueError, match="patch must be a positive number"):
        scores_to_grid(_lattice(), np.zeros(12), 0)
    with pytest.raises(ValueError, match=r"coords must be a non-empty \[N, 2\]"):
        scores_to_grid(np.zeros((5, 3)), np.zeros(5), 16)


def test_rank_normalize_keeps_order():
    r = rank_normalize([3.0, -1.0, 10.0, 0.5])
    np.testing.assert_allclose(r, [2 / 3, 0, 1, 1 / 3])
    assert np.argsort(r).tolist() == np.argsort([3.0, -1.0, 10.0, 0.5]).tolist()


def test_mask_outline_follows_patch_edges():
    coords = _lattice()
    fig, ax = plt.subplots()
    one = np.zeros(12, bool)
    one[5] = True  # row 1, col 1: a square of 4 edges
    lc = mask_outline(ax, coords, one, 16)
    segs = lc.get_segments()
    assert len(segs) == 4
    pts = np.concatenate(segs)
    assert pts[:, 0].min() == 16 and pts[:, 0].max() == 32 and pts[:, 1].min() == 16 and pts[:, 1].max() == 32
    two = one.copy()
    two[6] = True  # a 1 x 2 block: 6 outer edges, the shared one is not drawn
    assert len(mask_outline(ax, coords, two, 16).get_segments()) == 6
    assert mask_outline(ax, coords, np.zeros(12, bool), 16) is None
    plt.close(fig)


def test_heatmap_overlay_over_an_image_and_on_a_blank_canvas():
    coords = _lattice()
    img = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    fig, axes = plt.subplots(1, 2)
    layer = heatmap_overlay(axes[0], img, coords, np.arange(12), 16, mask=np.arange(12) > 8, title="t")
    assert layer.get_extent() == [0.0, 64.0, 48.0, 0.0]
    assert len(axes[0].images) == 2 and len(axes[0].collections) == 1
    assert axes[0].get_xlim() == (0.0, 64.0)
    layer = heatmap_overlay(axes[1], None, coords * 16, np.arange(12), 256, rank=True)  # simulated-slide style
    assert len(axes[1].images) == 1
    assert np.nanmax(layer.get_array()) == 1.0
    # a thumbnail at half resolution still spans the slide
    fig2, ax = plt.subplots()
    heatmap_overlay(ax, img[::2, ::2], coords, np.arange(12), 16, downsample=2.0)
    assert ax.images[0].get_extent() == [0.0, 64.0, 48.0, 0.0]
    with pytest.raises(ValueError, match="downsample must be positive"):
        heatmap_overlay(ax, img, coords, np.arange(12), 16, downsample=0)
    plt.close(fig)
    plt.close(fig2)


def test_slide_heatmaps_panels_and_notes():
    coords = _lattice()
    img = np.random.default_rng(1).random((48, 64))
    mask = np.arange(12) % 5 == 0
    fig = slide_heatmaps(img, coords, {"A": np.arange(12), "B": -np.arange(12)}, 16, mask=mask,
                         truth=np.linspace(0, 1, 12), notes={"A": "AUROC 0.9"})
    assert len(fig.axes) == 4
    assert fig.axes[2].get_title() == "A\nAUROC 0.9"
    with pytest.raises(ValueError, match="maps is empty"):
        slide_heatmaps(img, coords, {}, 16)
    plt.close("all")
