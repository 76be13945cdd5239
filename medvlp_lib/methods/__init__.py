"""Training methods (trainer contract: ``training_step(batch) -> dict``) and their pure loss functions.

``contrastive`` (InfoNCE, CLIP loss), ``clip`` (the CLIP baseline method), ``momentum`` (EMA, queues),
``msd`` (momentum self-distillation, MM-MoCo, ALBEF), ``rfbe`` (batch enlargement), ``memory`` and ``momkd``
(class-conditional momentum memory), ``vlcd`` (contrastive distillation), ``adaptor`` (the Adaptor on cached
frozen embeddings), ``segmentation`` (a decoder on a frozen backbone), ``ssl`` (SimCLR pretraining of the
offline backbones). Layer: methods build on ``models``, ``data`` and ``train``; the main names of each module
are re-exported here lazily (importing ``medvlp_lib.methods`` does not import every chapter).
"""
from __future__ import annotations

from ..utils import lazy_exports
from .clip import CLIP
from .contrastive import as_scale, clip_loss, info_nce, similarity_logits

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
    "AdaptorMethod": "adaptor",
    "segmentation_loss": "segmentation",
    "SegmentationMethod": "segmentation",
    "nt_xent": "ssl",
    "SimCLR": "ssl",
    "SSLConfig": "ssl",
    "offline_pretrained_backbone": "ssl",
    "embed_tiles": "ssl",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
__all__ = ["CLIP", "as_scale", "clip_loss", "info_nce", "similarity_logits", *_LAZY]
