"""Student and teacher image towers for the VLCD chapter (Vision-Language Contrastive Distillation).

VLCD (arXiv 2506.02229) compresses the image tower of a CLIP-style model: a ResNet-50 *teacher* trained
contrastively with a text encoder, and small *students* that must produce embeddings in the teacher's
shared image-text space. The students, by timm name:

=========================  =======================  =============================================
paper name                 timm name                note
=========================  =======================  =============================================
MobileNetV3-Large          ``mobilenetv3_large_100``  fastest; ~4.2 M backbone parameters
EfficientNet-B0            ``efficientnet_b0``        ~4.0 M
EfficientFormer-L1         ``efficientformer_l1``     ~11.4 M; last stage is attention with a fixed
                                                      grid of relative-position biases (see below)
ResNet-50 (teacher)        ``resnet50``               ~23.5 M
=========================  =======================  =============================================

Each tower is a :class:`StudentEncoder`: a timm backbone (:func:`~medvlp_lib.models.encoders.build_image_encoder`,
pooled features ``[B, feature_dim]``) followed by a :class:`~medvlp_lib.models.encoders.ProjectionHead`
into the shared ``embed_dim`` space. ``forward`` returns the *unnormalised* embedding (VLCD's norm
distillation needs the norm); :meth:`StudentEncoder.encode_image` returns the L2-normalised one used for
similarities, the same convention as :class:`~medvlp_lib.models.encoders.DualEncoder`.

EfficientFormer and input size: timm's ``efficientformer_l1`` builds its last-stage attention with a bias
table for a 7 x 7 token grid (224 px input, stride 32) and fails at any other size. :func:`build_student`
takes ``img_size`` and rebuilds each attention block's bias table and index for the real grid
(``ceil(img_size / 32)``; 2 x 2 at 64 px); biases loaded from 224-px weights are resized bicubically (the
same trick timm uses for LeViT). An input of another size raises a ``ValueError`` naming ``img_size``.
CNN students accept any size.

Weights: random initialisation by default (offline). ``pretrained=True`` loads timm's ImageNet weights
only from the local Hugging Face cache (never downloads here: we look for the file first and raise
:class:`~medvlp_lib.models.encoders.WeightsNotAvailableError` otherwise); ``pretrained="/path/file"`` loads
a ``.safetensors`` / ``.pth`` / ``.bin`` file you downloaded yourself.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .encoders import (DualEncoder, ImageEncoder, ProjectionHead, WeightsNotAvailableError, build_image_encoder,
                       build_text_encoder, count_parameters)

__all__ = ["STUDENTS", "TEACHER", "StudentEncoder", "build_student", "build_teacher", "resolve_name",
           "set_efficientformer_resolution"]

STUDENTS: dict[str, str] = {
    "mobilenetv3": "mobilenetv3_large_100",
    "efficientnet_b0": "efficientnet_b0",
    "efficientformer_l1": "efficientformer_l1",
}
"""Short name -> timm name of the three VLCD students (the paper's order)."""

TEACHER = "resnet50"
"""timm name of the VLCD teacher's image tower."""

_ALIASES = {
    "mobilenetv3": "mobilenetv3_large_100", "mobilenetv3_large": "mobilenetv3_large_100",
    "mobilenetv3-large": "mobilenetv3_large_100", "mobilenet_v3_large": "mobilenetv3_large_100",
    "efficientnet-b0": "efficientnet_b0", "efficientformer-l1": "efficientformer_l1",
    "resnet-50": "resnet50", "teacher": "resnet50",
}


def resolve_name(name: str) -> str:
    """Map a short or paper-style name (``"mobilenetv3"``, ``"EfficientNet-B0"``, ``"teacher"``) to timm's."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string (timm model name), got {name!r}")
    key = name.strip().lower()
    return _ALIASES.get(key, STUDENTS.get(key, key))


def _final_grid(img_size: int | Sequence[int], stride_steps: int = 5) -> tuple[int, int]:
    """Token grid after EfficientFormer's stem (2 stride-2 convs) and 3 downsamples (k=3, s=2, p=1): each
    halves with ceiling, ``n -> ceil(n / 2)``, five times."""
    hw = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    if len(hw) != 2 or any((not isinstance(v, int)) or v < 1 for v in hw):
        raise ValueError(f"img_size must be a positive int or (H, W), got {img_size!r}")
    out = []
    for n in hw:
        for _ in range(stride_steps):
            n = (n + 1) // 2
        out.append(n)
    return out[0], out[1]


def set_efficientformer_resolution(backbone: nn.Module, img_size: int | Sequence[int]) -> int:
    """Rebuild the relative-position bias of every EfficientFormer attention block for ``img_size`` input.

    timm's table ``attention_biases [heads, R0*R1]`` is indexed by ``|dy| * R1 + |dx|`` over the R0 x R1 token
    grid. We replace it by the table of the new grid (bicubic resize of the old table viewed as an
    R0 x R1 image, so trained biases carry over) and recompute the index buffer. Returns the number of
    attention blocks changed (0 if the backbone has none).
    """
    from timm.models.efficientformer import Attention

    r0, r1 = _final_grid(img_size)
    changed = 0
    for module in backbone.modules():
        if not isinstance(module, Attention):
            continue
        old = module.attention_biases.data
        heads, n_old = old.shape
        side = int(round(math.sqrt(n_old)))
        if side * side != n_old:
            raise ValueError(f"unexpected non-square EfficientFormer bias table with {n_old} entries")
        if (side, side) != (r0, r1):
            grid = old.reshape(1, heads, side, side)
            new = F.interpolate(grid, size=(r0, r1), mode="bicubic", align_corners=False).reshape(heads, r0 * r1)
            trainable = module.attention_biases.requires_grad
            module.attention_biases = nn.Parameter(new.contiguous(), requires_grad=trainable)
        ys, xs = torch.meshgrid(torch.arange(r0), torch.arange(r1), indexing="ij")
        pos = torch.stack([ys.flatten(), xs.flatten()])
        rel = (pos[:, :, None] - pos[:, None, :]).abs()
        idx = (rel[0] * r1 + rel[1]).to(module.attention_bias_idxs.device)
        module.attention_bias_idxs = idx  # registered buffer: assignment keeps it a buffer
        module.attention_bias_cache = {}
        changed += 1
    return changed


def _cached_weight_file(timm_name: str) -> Path | None:
    """Path of timm's default pretrained weights in the local Hugging Face cache, or None (no network)."""
    try:
        import timm
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - both ship with timm
        return None
    cfg = timm.models.get_pretrained_cfg(timm_name)
    if cfg is None:
        return None
    hub_id = getattr(cfg, "hf_hub_id", None)
    if not hub_id:
        return None
    for fname in ("model.safetensors", "pytorch_model.bin", getattr(cfg, "hf_hub_filename", None)):
        if not fname:
            continue
        found = try_to_load_from_cache(hub_id, fname)
        if isinstance(found, (str, os.PathLike)) and Path(found).is_file():
            return Path(found)
    return None


class StudentEncoder(nn.Module):
    """A timm image tower plus a projection into the shared embedding space.

    ``forward(x) -> [B, embed_dim]`` unnormalised embedding ``g(f(x))``; ``encode_image(x)`` its L2-normalised
    version; ``image_features(x) -> [B, feature_dim]`` the pooled backbone features (linear-probe input).
    Attributes: ``name`` (timm name), ``img_size`` (None = any size), ``feature_dim``, ``embed_dim`` and
    ``out_dim`` (= ``embed_dim``, so a student can stand wherever an encoder with ``.out_dim`` is expected).
    """
    def __init__(self, encoder: ImageEncoder, embed_dim: int, proj: str = "mlp", img_size: int | None = None):
        super().__init__()
        if not hasattr(encoder, "out_dim"):
            raise TypeError(f"encoder must expose .out_dim (use build_image_encoder), got {type(encoder).__name__}")
        if not isinstance(embed_dim, int) or embed_dim < 1:
            raise ValueError(f"embed_dim must be a positive integer, got {embed_dim!r}")
        self.encoder = encoder
        self.name = getattr(encoder, "name", type(encoder).__name__)
        self.img_size = img_size
        # pooled width: timm's ``head_hidden_size`` when it differs from ``num_features`` (MobileNetV3 pools
        # 960 channels and then applies a 1280-wide conv head: pre-logits = 1280), else ``encoder.out_dim``.
        backbone = getattr(encoder, "backbone", None)
        self.feature_dim = int(getattr(backbone, "head_hidden_size", None) or encoder.out_dim)
        self.embed_dim = self.out_dim = int(embed_dim)
        self.proj = ProjectionHead(self.feature_dim, self.embed_dim, kind=proj)

    def _check_size(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(f"{self.name}: expected an image batch [B, C, H, W], got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if self.img_size is not None and self.name.startswith("efficientformer"):
            if _final_grid(tuple(x.shape[-2:])) != _final_grid(self.img_size):
                raise ValueError(f"{self.name} was built for img_size={self.img_size} (attention biases are tied to "
                                 f"the token grid) but got input {tuple(x.shape[-2:])}; rebuild with "
                                 f"build_student(..., img_size={x.shape[-1]})")

    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_size(x)
        return self.encoder(x)

    @property
    def image_proj(self) -> nn.Module:
        """The projection head under :class:`DualEncoder`'s name, so code written for a teacher
        (``image_proj(image_features(x))``) also gets a student's unnormalised embedding."""
        return self.proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.image_features(x))

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.forward(x), dim=-1)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return count_parameters(self, trainable_only=trainable_only)


def _build_backbone(name: str, in_chans: int, img_size: int | None, pretrained: bool | str | os.PathLike,
                    trainable: str) -> ImageEncoder:
    timm_name = resolve_name(name)
    kwargs = {}
    if pretrained is True:
        path = _cached_weight_file(timm_name)
        if path is None:
            raise WeightsNotAvailableError(
                f"pretrained=True for {timm_name!r}: no weights in the local Hugging Face cache and this function "
                f"never downloads. Pre-download on a machine with internet "
                f"(`python -c \"import timm; timm.create_model('{timm_name}', pretrained=True)\"`) and copy the "
                f"cache (HF_HOME), or pass pretrained='/path/to/model.safetensors', or use pretrained=False.")
        kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
        pretrained = True
    elif isinstance(pretrained, (str, os.PathLike)):
        path = Path(pretrained)
        if not path.is_file():
            raise FileNotFoundError(f"pretrained={str(pretrained)!r}: weight file not found (expected a "
                                    f".safetensors / .pth / .bin state dict for timm model {timm_name!r})")
        kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
        pretrained = True
    elif pretrained is not False:
        raise TypeError(f"pretrained must be False, True or a path to a weight file, got {pretrained!r}")
    encoder = build_image_encoder(timm_name, pretrained=pretrained, in_chans=in_chans, trainable=trainable, **kwargs)
    if timm_name.startswith("efficientformer") and img_size is not None:
        set_efficientformer_resolution(encoder.backbone, img_size)
    return encoder


def build_student(name: str, embed_dim: int = 128, in_chans: int = 1, img_size: int | None = 224,
                  pretrained: bool | str | os.PathLike = False, proj: str = "mlp",
                  trainable: str = "all") -> StudentEncoder:
    """Build a VLCD student (or the teacher's image tower) by timm or short name, with a projection head.

    ``name``: ``"mobilenetv3_large_100"`` / ``"mobilenetv3"``, ``"efficientnet_b0"``, ``"efficientformer_l1"``,
    ``"resnet50"`` / ``"teacher"``, or any other timm name. ``img_size`` matters only for EfficientFormer
    (its attention biases are tied to the token grid; ``None`` keeps timm's 224-px grid). ``pretrained``:
    ``False`` (random init), ``True`` (timm weights from the local cache only) or a weight-file path.
    """
    if not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(f"in_chans must be a positive integer, got {in_chans!r}")
    if img_size is not None:
        _final_grid(img_size)
    encoder = _build_backbone(name, in_chans, img_size, pretrained, trainable)
    return StudentEncoder(encoder, embed_dim, proj=proj, img_size=img_size)


def build_teacher(text_encoder: nn.Module | None = None, embed_dim: int = 128, in_chans: int = 1,
                  pretrained: bool | str | os.PathLike = False, proj: str = "mlp",
                  init_temperature: float = 0.07) -> DualEncoder:
    """The VLCD teacher: a ResNet-50 image tower and a text tower in a :class:`DualEncoder`.

    Train it with the CLIP method (``medvlp_lib.methods.clip.CLIP``) and freeze it for distillation.
    ``text_encoder`` defaults to :func:`~medvlp_lib.models.encoders.build_text_encoder` (MiniLM, frozen,
    shipped in a wheel).
    """
    if text_encoder is None:

        text_encoder = build_text_encoder()
    image_encoder = _build_backbone(TEACHER, in_chans, None, pretrained, "all")
    return DualEncoder(image_encoder, text_encoder, embed_dim=embed_dim, init_temperature=init_temperature,
                       proj=proj)
