r"""VLCD: Vision-Language Contrastive Distillation (arXiv 2506.02229) -- losses and training methods.

VLCD compresses the image tower of a CLIP-style teacher (ResNet-50 + text encoder) into a small student
(MobileNetV3, EfficientNet-B0, EfficientFormer-L1) in two stages:

1. **Predistillation** (:class:`Predistill`, :func:`predistill_loss`): on unlabeled natural images the
   student mimics the frozen teacher's image features through a projector ``P``,

   .. math:: L_{pre} = \frac1B \sum_i \Big(1 - \cos\big(P(s_i),\, t_i\big)\Big).

2. **VLCD training** (:class:`VLCD`, :func:`vlcd_loss`) on image-report pairs:

   .. math:: L = L_t + \lambda\, L_{gnd} + \mu\, L_{dist}, \qquad \lambda = 0.1 \text{ (paper's best)}.

   * ``L_t``: symmetric image-text contrastive (CLIP) loss between the student's normalised image
     embeddings and the (frozen, teacher's) text embeddings of the paired reports
     (:func:`medvlp_lib.methods.contrastive.clip_loss`).
   * ``L_gnd``: text-anchored *generalized norm distillation* (:func:`gnd_loss`), below.
   * ``L_dist``: plain feature distillation between student and teacher image embeddings
     (:func:`feature_distill_loss`; cosine by default). The paper's figure shows an ``L_dist`` term; its
     weight is not given, so ``mu = 0`` by default and the chapter ablates it.

Generalized norm distillation -- the form we implement
------------------------------------------------------
Wang et al. (2023), "Improving knowledge distillation via regularizing feature norm and direction"
(ND loss, arXiv 2305.17007) pull the student's (unnormalised) embedding ``s_i`` along the unit direction
of the teacher's class mean ``c_{y_i}`` and ask for a norm at least as large as the teacher's:

.. math:: L_{nd} = \frac1B \sum_i \Big( 1 - \frac{\langle s_i,\, c_{y_i}/\lVert c_{y_i}\rVert \rangle}
                                              {\max(\lVert s_i\rVert, \lVert t_i\rVert)} \Big)

(their public code: ``1 - dot(s, e_c) / max(||s||, ||t||)``). When ``||s_i|| >= ||t_i||`` the term is
``1 - cos(s_i, c)`` (direction only); when the student's norm is smaller it equals
``1 - ||s_i|| cos(s_i, c) / ||t_i||``, so the loss also falls as the student's *projection on the anchor
grows* -- "a large projection on the class-mean direction". VLCD has no class labels; it replaces the
class centre by the paired report's text feature ``v_i`` (paper Eq. 6: the anchor is ``F(v^j)``):

.. math:: L_{gnd} = \frac1B \sum_i \Big( 1 - \frac{\langle s_i,\, v_i/\lVert v_i\rVert \rangle}
                                              {\max(\lVert s_i\rVert, \lVert t_i\rVert, \varepsilon)} \Big)

with ``s_i`` the student's *unnormalised* projected image embedding, ``t_i`` the frozen teacher's
(unnormalised) projected image embedding of the same image and ``v_i`` the text embedding, all in the
shared embedding space. Why this form: it is exactly Wang et al.'s loss with the anchor swapped, so the
norm term keeps its meaning (the teacher's norm sets the floor the student must reach along the anchor),
it is bounded in ``[0, 2]``, and with no teacher (``t = None``) it reduces to ``1 - cos(s_i, v_i)``.
Gradients never reach the anchor or the teacher (both detached): the text tower and the teacher are
frozen in VLCD.

Everything here depends only on torch (plus :mod:`.contrastive`).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..models.encoders import LOGIT_SCALE_INIT, MAX_SCALE, freeze, scale_from_logit
from .clip import image_text_batch
from .contrastive import clip_loss

__all__ = ["predistill_loss", "gnd_loss", "feature_distill_loss", "vlcd_loss", "Predistill", "VLCD",
           "DEFAULT_LAMBDA"]

DEFAULT_LAMBDA = 0.1
"""The paper's best L_gnd weight (0.01 under-distils, 10 over-distils)."""


# ----------------------------------------------------------------------------------------------------
# Pure losses
# ----------------------------------------------------------------------------------------------------
def _check_pair(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    for name, t in ((name_a, a), (name_b, b)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor [B, D], got {type(t).__name__}")
        if t.ndim != 2:
            raise ValueError(f"{name} must be 2-D [B, D], got shape {tuple(t.shape)}")
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape [B, D], got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")


def predistill_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor,
                    eps: float = 1e-8) -> tuple[torch.Tensor, dict[str, float]]:
    """Predistillation loss ``L_pre = mean_i (1 - cos(s_i, t_i))``; the teacher side is detached.

    ``student_feat`` [B, D] is the student's feature *after* the projector (so it lives in the teacher's
    feature space); ``teacher_feat`` [B, D] the frozen teacher's. Returns ``(loss, {"cos": mean cosine})``.
    """
    _check_pair(student_feat, teacher_feat, "student_feat", "teacher_feat")
    cos = F.cosine_similarity(student_feat, teacher_feat.detach().to(student_feat.dtype), dim=-1, eps=eps)
    loss = (1.0 - cos).mean()
    return loss, {"cos": float(cos.detach().mean())}


def gnd_loss(student_img: torch.Tensor, text_anchor: torch.Tensor, teacher_img: torch.Tensor | None = None,
             eps: float = 1e-8) -> tuple[torch.Tensor, dict[str, float]]:
    """Text-anchored generalized norm distillation (see the module docstring for the derivation):

        L_gnd = mean_i [ 1 - <s_i, v_i / ||v_i||> / max(||s_i||, ||t_i||, eps) ]

    ``student_img`` [B, D]: unnormalised student image embeddings ``s_i`` (gradients flow here only);
    ``text_anchor`` [B, D]: the paired reports' text embeddings ``v_i`` (detached; any norm);
    ``teacher_img`` [B, D] or None: the teacher's unnormalised image embeddings ``t_i`` (detached); None
    drops the norm floor, giving ``1 - cos(s_i, v_i)``. Returns ``(loss, parts)`` with parts
    ``cos`` (mean cos(s, v)), ``proj`` (mean projection ``<s, v/||v||>``), ``s_norm`` and ``t_norm``.
    """
    _check_pair(student_img, text_anchor, "student_img", "text_anchor")
    anchor = F.normalize(text_anchor.detach().to(student_img.dtype), dim=-1, eps=eps)
    proj = (student_img * anchor).sum(-1)
    s_norm = student_img.norm(dim=-1)
    denom = s_norm.clamp_min(eps)
    t_norm = None
    if teacher_img is not None:
        _check_pair(student_img, teacher_img, "student_img", "teacher_img")
        t_norm = teacher_img.detach().to(student_img.dtype).norm(dim=-1)
        denom = torch.maximum(denom, t_norm)
    loss = (1.0 - proj / denom).mean()
    with torch.no_grad():
        parts = {"cos": float((proj / s_norm.clamp_min(eps)).mean()), "proj": float(proj.mean()),
                 "s_norm": float(s_norm.mean()),
                 "t_norm": float(t_norm.mean()) if t_norm is not None else float("nan")}
    return loss, parts


def feature_distill_loss(student_img: torch.Tensor, teacher_img: torch.Tensor, kind: str = "cosine",
                         eps: float = 1e-8) -> torch.Tensor:
    """Feature distillation ``L_dist`` between student and (detached) teacher image embeddings [B, D].

    ``kind="cosine"``: ``mean_i (1 - cos(s_i, t_i))`` (scale-free; the default, since CLIP embeddings are
    compared after normalisation). ``kind="mse"``: ``mean_{i,d} (s_id - t_id)^2`` on the raw features
    (FitNets-style; also matches the norm). ``kind="mse_normalized"``: ``mean_i ||s_i/||s_i|| - t_i/||t_i|| ||^2``
    (= ``2 L_cosine``, provided for comparisons).
    """
    _check_pair(student_img, teacher_img, "student_img", "teacher_img")
    t = teacher_img.detach().to(student_img.dtype)
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(student_img, t, dim=-1, eps=eps)).mean()
    if kind == "mse":
        return F.mse_loss(student_img, t)
    if kind == "mse_normalized":
        return (F.normalize(student_img, dim=-1, eps=eps) - F.normalize(t, dim=-1, eps=eps)).pow(2).sum(-1).mean()
    raise ValueError(f"kind must be 'cosine', 'mse' or 'mse_normalized', got {kind!r}")


def vlcd_loss(student_img: torch.Tensor, text_emb: torch.Tensor, teacher_img: torch.Tensor | None = None,
              scale=1.0 / 0.07, lam: float = DEFAULT_LAMBDA, mu: float = 0.0, dist: str = "cosine",
              eps: float = 1e-8) -> tuple[torch.Tensor, dict[str, float]]:
    """``L = L_t + lam * L_gnd + mu * L_dist`` (see the module docstring).

    ``student_img`` [B, D] unnormalised student embeddings; ``text_emb`` [B, D] paired text embeddings
    (the contrastive targets and the gnd anchors; normalised here for ``L_t``); ``teacher_img`` [B, D]
    unnormalised teacher embeddings or None (then ``mu`` must be 0 and ``L_gnd`` has no norm floor);
    ``scale`` the multiplier ``1/tau = exp(logit_scale)``. ``lam = mu = 0`` is the CLIP-only baseline
    (``L_gnd``/``L_dist`` are then not computed and are logged as NaN). Returns ``(loss, parts)`` with
    ``l_t``, ``l_gnd``, ``l_dist`` and the parts of the CLIP loss (``acc_i2t`` ...).
    """
    for name, v in (("lam", lam), ("mu", mu)):
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite non-negative float, got {v!r}")
    if mu > 0 and teacher_img is None:
        raise ValueError("mu > 0 (feature distillation) needs teacher_img; pass the teacher's embeddings or mu=0")
    _check_pair(student_img, text_emb, "student_img", "text_emb")
    l_t, clip_parts = clip_loss(F.normalize(student_img, dim=-1, eps=eps),
                                F.normalize(text_emb, dim=-1, eps=eps), scale)
    loss = l_t
    parts: dict[str, float] = {"l_t": float(l_t.detach()), **clip_parts}
    if lam > 0:
        l_gnd, gparts = gnd_loss(student_img, text_emb, teacher_img, eps=eps)
        loss = loss + lam * l_gnd
        parts.update({"l_gnd": float(l_gnd.detach()), "gnd_cos": gparts["cos"], "s_norm": gparts["s_norm"],
                      "t_norm": gparts["t_norm"]})
    else:
        parts["l_gnd"] = float("nan")
    if mu > 0:
        l_dist = feature_distill_loss(student_img, teacher_img, kind=dist, eps=eps)
        loss = loss + mu * l_dist
        parts["l_dist"] = float(l_dist.detach())
    else:
        parts["l_dist"] = float("nan")
    return loss, parts


# ----------------------------------------------------------------------------------------------------
# Methods (trainer contract: training_step(batch) -> {"loss": tensor, ...floats})
# ----------------------------------------------------------------------------------------------------
def _out_dim(module, what: str) -> int:
    for attr in ("out_dim", "embed_dim"):
        v = getattr(module, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    raise TypeError(f"{what} must expose .out_dim or .embed_dim (its feature width); pass {what}_dim= explicitly")


class _FrozenHolder(nn.Module):
    """Base for methods that hold frozen towers *by reference*: not registered as submodules, so they are
    not in ``parameters()`` / ``state_dict()`` (checkpoints hold only what is trained), yet ``.to()`` /
    ``.float()`` etc. reach them and ``train()`` keeps them in eval mode."""

    def __init__(self):
        super().__init__()
        self._frozen: dict[str, nn.Module] = {}

    def _hold(self, key: str, module: nn.Module | None) -> None:
        if module is not None:
            if not isinstance(module, nn.Module):
                raise TypeError(f"{key} must be an nn.Module, got {type(module).__name__}")
            self._frozen[key] = freeze(module)

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        for m in getattr(self, "_frozen", {}).values():
            m._apply(fn, *args, **kwargs)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        for m in getattr(self, "_frozen", {}).values():
            m.eval()
        return self


def _param_device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


def teacher_image_embedding(teacher: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The teacher's *unnormalised* projected image embedding (what ``L_gnd``'s norm floor uses).

    For a :class:`~medvlp_lib.models.encoders.DualEncoder`-like teacher: ``image_proj(image_features(x))``;
    for a module with ``encode_image`` only: ``encode_image(x)`` (norm 1); else ``teacher(x)``.
    """
    if hasattr(teacher, "image_proj") and hasattr(teacher, "image_features"):
        return teacher.image_proj(teacher.image_features(images))
    if hasattr(teacher, "encode_image"):
        return teacher.encode_image(images)
    return teacher(images)


def _check_cache(cache, augment):
    """Validate ``teacher_cache``: a [N, D] tensor of precomputed teacher targets indexed by ``batch["index"]``."""
    if cache is None:
        return None
    if not isinstance(cache, torch.Tensor) or cache.ndim != 2:
        raise ValueError(f"teacher_cache must be a [N, D] tensor, got "
                         f"{tuple(cache.shape) if isinstance(cache, torch.Tensor) else type(cache).__name__}")
    if augment is not None:
        raise ValueError("teacher_cache holds the teacher's outputs on the un-augmented images; it cannot be "
                         "combined with augment= (the student would see different images than the cache)")
    return cache.detach()


def _cached(cache, batch, images):
    """Rows of ``cache`` for ``batch["index"]`` (None when there is no cache)."""
    if cache is None:
        return None
    if "index" not in batch:
        raise ValueError("teacher_cache needs batch['index'] (dataset row of each image)")
    idx = torch.as_tensor(batch["index"], dtype=torch.long).cpu()
    if idx.numel() != images.shape[0] or int(idx.max()) >= cache.shape[0] or int(idx.min()) < 0:
        raise ValueError(f"batch['index'] does not fit teacher_cache with {cache.shape[0]} rows")
    return cache[idx].to(images.device)


class Predistill(_FrozenHolder):
    """Stage 1: the student mimics the frozen teacher's image features on unlabeled (natural) images.

    ``training_step(dict(image=[B, C, H, W], ...))`` computes ``P(student(x))`` and the teacher's target
    ``teacher_fn(x)`` under ``no_grad`` and returns :func:`predistill_loss`. Defaults: the student's
    ``forward`` (for a :class:`~medvlp_lib.models.students.StudentEncoder`: the unnormalised embedding, so the
    projection head is trained too) and the teacher's unnormalised projected image embedding
    (:func:`teacher_image_embedding`), i.e. predistillation happens in the shared embedding space the
    student will later live in. ``projector``: ``"linear"`` (default: ``Linear(student_dim, teacher_dim)``,
    discarded after this stage), ``"identity"`` (dims must match) or any module. The teacher is frozen
    (``requires_grad=False``), kept in eval mode even when the method is put in train mode, and held by
    reference (moved by ``.to()`` but not part of ``state_dict()``: a checkpoint holds student + projector).
    ``augment`` (optional) maps the image batch to an augmented one (same images go to both towers).
    ``teacher_cache`` (optional) ``[N, D]``: the teacher's targets precomputed for every dataset row and
    looked up by ``batch["index"]`` (exact for un-augmented, index-deterministic data such as
    :class:`~medvlp_lib.data.natural.NaturalCrops`; saves the teacher forward at every step).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, projector: str | nn.Module = "linear",
                 student_dim: int | None = None, teacher_dim: int | None = None,
                 teacher_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
                 augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 teacher_cache: torch.Tensor | None = None):
        super().__init__()
        self.student = student
        self._hold("teacher", teacher)
        self.teacher_fn = teacher_fn or teacher_image_embedding
        self.augment = augment
        self.teacher_cache = _check_cache(teacher_cache, augment)
        if isinstance(projector, nn.Module):
            self.projector = projector
        elif projector in ("linear", "identity"):
            sd = student_dim or _out_dim(student, "student")
            td = teacher_dim or _out_dim(teacher, "teacher")
            if projector == "identity":
                if sd != td:
                    raise ValueError(f"projector='identity' needs equal dims, got student {sd} and teacher {td}")
                self.projector = nn.Identity()
            else:
                self.projector = nn.Linear(sd, td)
        else:
            raise ValueError(f"projector must be 'linear', 'identity' or an nn.Module, got {projector!r}")

    @property
    def teacher(self) -> nn.Module:
        return self._frozen["teacher"]

    def training_step(self, batch: dict) -> dict:
        if not isinstance(batch, dict) or "image" not in batch:
            raise ValueError("batch must be a dict with key 'image' ([B, C, H, W] tensor), got "
                             f"{type(batch).__name__} with keys {list(batch) if isinstance(batch, dict) else None}")
        images = batch["image"].to(_param_device(self.student))
        if self.augment is not None:
            images = self.augment(images)
        with torch.no_grad():
            target = _cached(self.teacher_cache, batch, images)
            if target is None:
                target = self.teacher_fn(self.teacher, images)
        pred = self.projector(self.student(images))
        loss, parts = predistill_loss(pred.float(), target.float())
        return {"loss": loss, **parts}

    def forward(self, batch: dict) -> dict:
        return self.training_step(batch)


class VLCD(_FrozenHolder):
    """Stage 2: student image tower trained with ``L_t + lam L_gnd + mu L_dist`` against a frozen teacher.

    * ``student``: image module ``x -> [B, D]`` unnormalised embeddings in the shared space (a
      :class:`~medvlp_lib.models.students.StudentEncoder`); the only trained part (plus ``logit_scale``).
    * ``teacher``: a frozen :class:`~medvlp_lib.models.encoders.DualEncoder`-like model (ResNet-50 +
      text tower) or None. It supplies the text embeddings (``teacher.encode_text``) unless
      ``text_encoder`` is given, and the image embeddings ``t_i`` for ``L_gnd``'s norm floor and ``L_dist``.
    * ``text_encoder``: optional module ``list[str] -> [B, D]`` or with ``encode_text`` (overrides the
      teacher's text tower; e.g. for a CLIP-only student without any teacher). Frozen unless
      ``train_text=True`` (then it is registered, trained and checkpointed with the student).

    Frozen towers (teacher, frozen text tower) are held by reference: ``.to(device)`` moves them, but they
    are not in ``parameters()`` / ``state_dict()``, so checkpoints hold only the student and
    ``logit_scale``; pass the same teacher when you rebuild the method to resume.
    * ``lam`` (0.1), ``mu`` (0), ``dist`` (``"cosine"``): loss weights and ``L_dist`` kind.
    * ``teacher_cache`` (optional) ``[N, D]``: the teacher's unnormalised image embeddings precomputed for
      every dataset row and looked up by ``batch["index"]`` (exact without augmentation; not with ``augment``).
    * ``logit_scale``: learnable log-inverse temperature, initialised from the teacher's if it has one,
      else ``ln(1/0.07)``; clamped so the multiplier stays <= 100.

    ``VLCD.clip_only(student, teacher_or_text_encoder)`` is the CLIP-alone baseline (``lam = mu = 0``: the
    teacher image tower is never run; only its frozen text tower is used).
    ``training_step(dict(image=[B, C, H, W], text=list[str], ...))`` returns ``{"loss": tensor, "l_t",
    "l_gnd", "l_dist", "acc_i2t", ...}``.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, text_encoder: nn.Module | None = None,
                 lam: float = DEFAULT_LAMBDA, mu: float = 0.0, dist: str = "cosine",
                 init_temperature: float | None = None,
                 learn_temperature: bool = True, train_text: bool = False,
                 augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 teacher_cache: torch.Tensor | None = None):
        super().__init__()
        for name, v in (("lam", lam), ("mu", mu)):
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite non-negative float, got {v!r}")
        if dist not in ("cosine", "mse", "mse_normalized"):
            raise ValueError(f"dist must be 'cosine', 'mse' or 'mse_normalized', got {dist!r}")
        if teacher is None and text_encoder is None:
            raise ValueError("VLCD needs a text tower: pass teacher= (a DualEncoder-like model with encode_text) "
                             "or text_encoder=")
        if teacher is None and mu > 0:
            raise ValueError("mu > 0 (feature distillation) needs a teacher")
        if teacher is not None and text_encoder is None and not hasattr(teacher, "encode_text"):
            raise TypeError(f"teacher must have .encode_text (DualEncoder-like) when text_encoder is None, got "
                            f"{type(teacher).__name__}")
        self.student = student
        self._hold("teacher", teacher)
        self.train_text = bool(train_text)
        if text_encoder is not None and train_text:
            self.text_encoder = text_encoder  # registered: trained and checkpointed with the student
        else:
            self.text_encoder = None
            self._hold("text", text_encoder)
        self.lam, self.mu, self.dist = float(lam), float(mu), dist
        self.augment = augment
        self.teacher_cache = _check_cache(teacher_cache, augment)
        if init_temperature is None:
            init = getattr(teacher, "logit_scale", None) if teacher is not None else None
            init_log = float(init.detach()) if isinstance(init, torch.Tensor) else LOGIT_SCALE_INIT
        else:
            if not 1.0 / MAX_SCALE <= init_temperature <= 10:
                raise ValueError(f"init_temperature must be in [0.01, 10], got {init_temperature!r}")
            init_log = math.log(1.0 / init_temperature)
        self.logit_scale = nn.Parameter(torch.tensor(init_log), requires_grad=learn_temperature)

    @classmethod
    def clip_only(cls, student: nn.Module, teacher: nn.Module | None = None, text_encoder: nn.Module | None = None,
                  **kwargs) -> "VLCD":
        """The baseline: student trained with the contrastive loss alone (``lam = mu = 0``, no teacher images)."""
        return cls(student, teacher=teacher, text_encoder=text_encoder, lam=0.0, mu=0.0, **kwargs)

    @property
    def scale(self) -> torch.Tensor:
        """The similarity multiplier ``exp(logit_scale)``, capped (see
        :func:`~medvlp_lib.models.encoders.scale_from_logit`)."""
        return scale_from_logit(self.logit_scale)

    @property
    def teacher(self) -> nn.Module | None:
        return self._frozen.get("teacher")

    @property
    def text_tower(self) -> nn.Module:
        """The module producing text embeddings: ``text_encoder`` if given, else the teacher."""
        if self.text_encoder is not None:
            return self.text_encoder
        return self._frozen.get("text") or self._frozen["teacher"]

    @property
    def uses_teacher_images(self) -> bool:
        return self.teacher is not None and (self.lam > 0 or self.mu > 0)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Text embeddings ``[B, D]`` (``tower.encode_text`` if it has one, else ``tower(texts)``); no gradient
        unless ``train_text``."""
        tower = self.text_tower
        fn = tower.encode_text if hasattr(tower, "encode_text") else tower
        if self.train_text:
            return fn(texts)
        with torch.no_grad():
            return fn(texts)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """The student's L2-normalised image embedding (what zero-shot / retrieval / probes use)."""
        return F.normalize(self.student(images), dim=-1)

    def training_step(self, batch: dict) -> dict:
        images, texts = image_text_batch(batch, self.logit_scale.device, self.augment)
        s = self.student(images).float()
        v = self.encode_text(texts).float()
        t = None
        if self.uses_teacher_images:
            with torch.no_grad():
                t = _cached(self.teacher_cache, batch, images)
                t = (t if t is not None else teacher_image_embedding(self.teacher, images)).float()
        loss, parts = vlcd_loss(s, v, t, scale=self.scale, lam=self.lam, mu=self.mu, dist=self.dist)
        return {"loss": loss, **parts}

    def forward(self, batch: dict) -> dict:
        return self.training_step(batch)
