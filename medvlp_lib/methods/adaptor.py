"""Training the Adaptor (Qin et al., 2024, arXiv 2401.01179) on cached frozen embeddings.

The model (:class:`medvlp_lib.models.adaptor.Adaptor`) maps frozen image and text tokens to two L2-normalised
embeddings ``z_v``, ``z_t``; it is trained with the weighted CLIP loss
(:func:`medvlp_lib.methods.contrastive.clip_loss`, the library's one contrastive loss):

    S = scale * z_v z_t^T,   L = w CE(S, diag) + (1 - w) CE(S^T, diag),   scale = Adaptor.scale

``w = image_weight`` weights the image->text direction (softmax over the texts of each image). The paper
describes a symmetric CLIP loss (our reading: ``w = 0.5``); the default 0.75 is the weighting of the public
thesis code as this library reads it (see the Adaptor chapter).
"""
from __future__ import annotations

import torch
from torch import nn

from ..models.adaptor import Adaptor
from .contrastive import clip_loss

__all__ = ["AdaptorMethod"]


class AdaptorMethod(nn.Module):
    """Trainer method (see :mod:`medvlp_lib.train`) training an :class:`~medvlp_lib.models.adaptor.Adaptor`.

    ``training_step(batch)`` with ``batch = dict(img_tokens [B, N_v, d_v], txt_tokens [B, N_t, d_t],
    txt_mask bool [B, N_t], ...)`` (what :class:`medvlp_lib.data.cache.EmbeddingCache` yields) returns
    ``{"loss": tensor, "i2t", "t2i", "acc_i2t", "acc_t2i", "scale"}``. Only the Adaptor's parameters exist
    here, so the optimiser cannot touch the backbones. ``image_weight`` in [0, 1]: the weight of the
    image->text term (0.5 = CLIP's symmetric loss).
    """

    def __init__(self, adaptor: Adaptor, image_weight: float = 0.75):
        super().__init__()
        if not isinstance(adaptor, Adaptor):
            raise TypeError(f"adaptor must be an Adaptor, got {type(adaptor).__name__}")
        if isinstance(image_weight, bool) or not isinstance(image_weight, (int, float)) or \
                not 0.0 <= image_weight <= 1.0:
            raise ValueError(f"image_weight must be a float in [0, 1], got {image_weight!r}")
        self.adaptor, self.image_weight = adaptor, float(image_weight)

    @property
    def device(self) -> torch.device:
        return self.adaptor.logit_scale.device

    @property
    def scale(self) -> torch.Tensor:
        return self.adaptor.scale

    def _unpack(self, batch):
        if not isinstance(batch, dict) or not {"img_tokens", "txt_tokens"} <= set(batch):
            raise ValueError("batch must be a dict with 'img_tokens' [B, N_v, d_v], 'txt_tokens' [B, N_t, d_t] and "
                             f"optionally 'txt_mask' [B, N_t]; got "
                             f"{list(batch) if isinstance(batch, dict) else type(batch).__name__}")
        dev = self.device
        mask = batch.get("txt_mask")
        return (batch["img_tokens"].to(dev), batch["txt_tokens"].to(dev),
                None if mask is None else mask.to(dev))

    def training_step(self, batch: dict) -> dict:
        out = self.adaptor(*self._unpack(batch))
        loss, parts = clip_loss(out["image_emb"].float(), out["text_emb"].float(), self.adaptor.scale,
                                image_weight=self.image_weight)
        return {"loss": loss, **parts}

    @torch.no_grad()
    def embed(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Image and text embeddings ``([B, E], [B, E])`` of a cached batch (eval mode, no grad)."""
        was = self.training
        self.eval()
        try:
            out = self.adaptor(*self._unpack(batch))
        finally:
            self.train(was)
        return out["image_emb"], out["text_emb"]

    def forward(self, batch: dict) -> dict:
        return self.training_step(batch)
