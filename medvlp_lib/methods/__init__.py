"""Training methods and their pure loss functions (depend only on torch).

``contrastive`` (InfoNCE, CLIP loss), ``clip`` (the CLIP baseline method), ``momentum`` (EMA, queues),
``msd`` (momentum self-distillation, MM-MoCo, ALBEF), ``rfbe`` (batch enlargement), ``memory`` and ``momkd``
(class-conditional momentum memory), ``vlcd`` (contrastive distillation). The main names of each are
re-exported here lazily (importing ``medvlp_lib.methods`` does not import every chapter).
"""
from __future__ import annotations

from .clip import CLIP
from .contrastive import clip_loss, info_nce, similarity_logits

from ..utils import lazy_exports

_LAZY = {
    "ema_update_": "momentum",
    "momentum_schedule": "momentum",
    "MomentumEncoder": "momentum",
    "MomentumQueue": "momentum",
    "soft_targets": "msd",
    "msd_loss": "msd",
    "mm_moco_loss": "msd",
    "albef_loss": "msd",
    "uni_modal_loss": "msd",
    "combine_losses": "msd",
    "MSD": "msd",
    "MMMoCo": "msd",
    "ALBEF": "msd",
    "rfbe_step": "rfbe",
    "RFBE": "rfbe",
    "ClassMemory": "memory",
    "soft_angle_loss": "memory",
    "MemoryAttentionPool": "memory",
    "MoMKD": "momkd",
    "predistill_loss": "vlcd",
    "gnd_loss": "vlcd",
    "feature_distill_loss": "vlcd",
    "vlcd_loss": "vlcd",
    "Predistill": "vlcd",
    "VLCD": "vlcd",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
__all__ = ["CLIP", "clip_loss", "info_nce", "similarity_logits", *_LAZY]
