"""Models: image / text encoders, projection heads and the dual encoder (``encoders``); frozen backbones,
the Adaptor, segmentation decoder, students, slide graph encoders and MIL baselines (re-exported lazily)."""
from __future__ import annotations

from ..utils import lazy_exports
from .encoders import (MAX_SCALE, DualEncoder, ImageEncoder, ProjectionHead, TextEncoder, WeightsNotAvailableError,
                       build_image_encoder, build_text_encoder, count_parameters, default_text_encoder_path, freeze,
                       scale_from_logit)

_LAZY = {
    "Adaptor": "adaptor",
    "trainable_parameter_table": "adaptor",
    "build_frozen_image_backbone": "backbones",
    "build_frozen_text_backbone": "backbones",
    "ABMIL": "mil",
    "MeanPoolMIL": "mil",
    "UNetDecoder": "segmentation",
    "FrozenBackboneSegmenter": "segmentation",
    "build_student": "students",
    "build_teacher": "students",
    "knn_graph": "wsi",
    "GATv2SlideEncoder": "wsi",
    "OmicsEncoder": "wsi",
    "OmicsDecoder": "wsi",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
__all__ = ["MAX_SCALE", "DualEncoder", "ImageEncoder", "ProjectionHead", "TextEncoder", "WeightsNotAvailableError",
           "build_image_encoder", "build_text_encoder", "count_parameters", "default_text_encoder_path", "freeze",
           "scale_from_logit", *_LAZY]
