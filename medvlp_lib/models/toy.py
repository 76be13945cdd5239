"""One small, fast dual encoder for tests, benchmarks and the RFBE gradient check.

:class:`ToyDualEncoder` honours the library's dual-encoder contract (``encode_image``, ``encode_text``, the
multiplier property ``scale`` = ``exp(logit_scale)`` capped at :data:`~medvlp_lib.models.encoders.MAX_SCALE`,
``embed_dim``) without pretrained weights or a tokenizer, so any method (CLIP, MSD, RFBE, VLCD) can be
exercised in milliseconds:

* image tower: for each entry ``c_k`` of ``channels`` a block Conv3x3(stride ``strides[k]``) -> ``norm`` ->
  ReLU, then adaptive average pooling to ``pool x pool`` and a linear map to ``embed_dim``;
* text tower: every lower-cased word hashed (CRC-32) into ``vocab`` buckets, an ``EmbeddingBag`` (mean) of
  width ``token_dim``, then ``Linear -> act -> Linear`` through ``text_hidden`` (or one ``Linear`` when
  ``text_hidden`` is None) to ``embed_dim``;
* both outputs L2-normalised.

``norm`` (:data:`NORMS`): ``"none"``, ``"groupnorm"`` (``groups`` groups, default 2), ``"layernorm"`` (``GroupNorm(1, C)``: per sample
over C, H, W), ``"batchnorm_eval"`` / ``"batchnorm_train"`` (the same ``BatchNorm2d``; which mode it runs in is
the caller's choice -- the names document the intent for RFBE's gradient-equivalence check, where only
batch-coupling BatchNorm in train mode breaks exactness).
"""
from __future__ import annotations

import math
import zlib
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .encoders import DualEncoderBase

__all__ = ["ToyDualEncoder", "NORMS", "hashed_tokens", "toy_batch", "TOY_REPORTS"]

NORMS = ("none", "groupnorm", "layernorm", "batchnorm_eval", "batchnorm_train")

TOY_REPORTS = ("Heart size normal. Lungs are clear.", "No acute cardiopulmonary abnormality.",
               "Cardiomegaly. Small left pleural effusion.", "Right lower lobe consolidation.",
               "Calcified granuloma. Heart size normal.", "Emphysema. Degenerative changes of the thoracic spine.",
               "Pulmonary edema.", "No pneumothorax. Stable mediastinum.")
"""Eight short report texts, enough for a toy batch with repeated and distinct reports."""


def toy_batch(n: int, size: int, seed: int, dtype: torch.dtype = torch.float64) -> dict:
    """A deterministic batch for the toy encoder: ``dict(image [n, 1, size, size] uniform in [0, 1], text
    (n of :data:`TOY_REPORTS`, cycling from ``seed``), index = arange(n) + 1000 * seed)``."""
    g = torch.Generator().manual_seed(seed)
    return dict(image=torch.rand(n, 1, size, size, generator=g, dtype=dtype),
                text=[TOY_REPORTS[(i * 3 + seed) % len(TOY_REPORTS)] for i in range(n)],
                index=torch.arange(n) + 1000 * seed)


def hashed_tokens(texts: Sequence[str], vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, offsets)`` for ``nn.EmbeddingBag``: each lower-cased word of each text as ``crc32(word) % vocab``
    (an empty text becomes the single token ``"<empty>"``)."""
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    ids, offsets = [], []
    for t in texts:
        offsets.append(len(ids))
        ids += [zlib.crc32(w.encode()) % vocab for w in (str(t).lower().split() or ["<empty>"])]
    return torch.tensor(ids, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)


def _norm(kind: str, channels: int, groups: int) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    if kind == "groupnorm":
        if channels % groups:
            raise ValueError(f"groups={groups} must divide every block's channels, got {channels}")
        return nn.GroupNorm(groups, channels)
    if kind == "layernorm":
        return nn.GroupNorm(1, channels)
    return nn.BatchNorm2d(channels)


class ToyDualEncoder(DualEncoderBase):
    """A small dual encoder (see the module docstring); ``dtype`` float32 or float64 (gradient checks)."""

    def __init__(self, embed_dim: int = 16, *, channels: Sequence[int] = (8,), strides: Sequence[int] | None = None,
                 norm: str = "groupnorm", groups: int = 2, pool: int = 2, vocab: int = 64, token_dim: int = 16,
                 text_hidden: int | None = 32, text_act: str = "tanh", in_chans: int = 1,
                 init_temperature: float = 0.07, dtype: torch.dtype = torch.float32):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        channels = tuple(int(c) for c in channels)
        strides = tuple(int(s) for s in strides) if strides is not None else (2,) * len(channels)
        if not channels or len(strides) != len(channels) or min(channels) < 1 or min(strides) < 1:
            raise ValueError(f"channels and strides must be non-empty positive sequences of equal length, got "
                             f"{channels}, {strides}")
        for name, v in (("embed_dim", embed_dim), ("pool", pool), ("vocab", vocab), ("token_dim", token_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if text_act not in ("tanh", "gelu", "relu"):
            raise ValueError(f"text_act must be 'tanh', 'gelu' or 'relu', got {text_act!r}")
        self.embed_dim, self.vocab, self.norm = embed_dim, vocab, norm
        layers, c_in = [], in_chans
        for c, s in zip(channels, strides):
            layers += [nn.Conv2d(c_in, c, 3, stride=s, padding=1), _norm(norm, c, groups), nn.ReLU()]
            c_in = c
        self.img = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(pool), nn.Flatten(), nn.Linear(c_in * pool * pool,
                                                                                                embed_dim))
        self.tok = nn.EmbeddingBag(vocab, token_dim, mode="mean")
        act = {"tanh": nn.Tanh, "gelu": nn.GELU, "relu": nn.ReLU}[text_act]
        self.txt = (nn.Linear(token_dim, embed_dim) if text_hidden is None else
                    nn.Sequential(nn.Linear(token_dim, text_hidden), act(), nn.Linear(text_hidden, embed_dim)))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.to(dtype)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.img(x.to(self.logit_scale.dtype)), dim=-1)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        ids, offsets = hashed_tokens(texts, self.vocab)
        dev = self.logit_scale.device
        return F.normalize(self.txt(self.tok(ids.to(dev), offsets.to(dev))), dim=-1)
