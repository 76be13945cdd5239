"""Plotting helpers shared by the chapters (matplotlib; seaborn for the ledger's forest plot; every figure
function returns the figure)."""
from .attention import attention_overlays, report_tokens, token_attention_grid, token_attention_maps, upsample_maps
from .embeddings import embedding_panels, project_2d, silhouette
from .plots import (VERDICT_COLOURS, bar_with_errors, forest_plot, image_grid, loss_curves, overlay_mask,
                    sweep_plot)
from .slides import heatmap_overlay, mask_outline, rank_normalize, scores_to_grid, slide_heatmaps

__all__ = ["image_grid", "overlay_mask", "loss_curves", "bar_with_errors", "sweep_plot", "forest_plot", "VERDICT_COLOURS",
           "project_2d", "silhouette",
           "embedding_panels", "upsample_maps", "attention_overlays", "report_tokens", "token_attention_maps",
           "token_attention_grid", "heatmap_overlay", "mask_outline", "rank_normalize", "scores_to_grid",
           "slide_heatmaps"]
