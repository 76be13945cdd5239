"""Models: image / text encoders, projection heads and the dual encoder (``encoders``)."""
from __future__ import annotations

from .encoders import (DualEncoder, ImageEncoder, ProjectionHead, TextEncoder, WeightsNotAvailableError,
                       build_image_encoder, build_text_encoder, count_parameters, default_text_encoder_path)

__all__ = ["DualEncoder", "ImageEncoder", "ProjectionHead", "TextEncoder", "WeightsNotAvailableError",
           "build_image_encoder", "build_text_encoder", "count_parameters", "default_text_encoder_path"]
