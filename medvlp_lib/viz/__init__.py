"""Plotting helpers shared by the chapters (matplotlib only; every figure function returns the figure)."""
from .attention import attention_overlays, report_tokens, token_attention_grid, token_attention_maps, upsample_maps
from .embeddings import embedding_panels, project_2d, silhouette
from .plots import bar_with_errors, image_grid, loss_curves, overlay_mask, sweep_plot
from .slides import heatmap_overlay, mask_outline, rank_normalize, scores_to_grid, slide_heatmaps

__all__ = ["image_grid", "overlay_mask", "loss_curves", "bar_with_errors", "sweep_plot", "project_2d", "silhouette",
           "embedding_panels", "upsample_maps", "attention_overlays", "report_tokens", "token_attention_maps",
           "token_attention_grid", "heatmap_overlay", "mask_outline", "rank_normalize", "scores_to_grid",
           "slide_heatmaps"]
