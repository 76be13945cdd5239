"""Plotting helpers shared by the chapters (matplotlib only; every function returns the figure)."""
from .plots import bar_with_errors, image_grid, loss_curves, overlay_mask

__all__ = ["image_grid", "overlay_mask", "loss_curves", "bar_with_errors"]
