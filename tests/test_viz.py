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
