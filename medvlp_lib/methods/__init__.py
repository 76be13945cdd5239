"""Training methods and their pure loss functions (depend only on torch).

``contrastive`` (InfoNCE, CLIP loss), ``clip`` (the CLIP baseline method); ``momentum``, ``msd``, ``rfbe``
and friends live in their own modules and are imported from there.
"""
from __future__ import annotations

from .clip import CLIP
from .contrastive import clip_loss, info_nce, similarity_logits

__all__ = ["CLIP", "clip_loss", "info_nce", "similarity_logits"]
