"""Compositions of the book's mechanisms (chapter 10): pieces that join two papers' methods.

* :class:`AdaptorMSD` -- **MSD on frozen backbones**: the Adaptor (:class:`~medvlp_lib.models.adaptor.Adaptor`, on
  cached frozen tokens) trained with MSD's soft targets, a momentum Adaptor and two queues
  (:class:`~medvlp_lib.methods.msd.MSD`) instead of its own CLIP loss. With ``z_v, z_t`` the Adaptor's embeddings of
  a cached pair, the loss is MSD's (paper Eq. 5) unchanged:

      target(i) = (alpha * stopgrad(p_q2k(i)) + beta * p_k2k(i)) / (alpha + beta)
      L = (w_uni L_uni + w_multi mean_i KL(target(i) || p_q2k(i))) / (w_uni + w_multi)

  The Adaptor embeds image and text *jointly* (cross-attention), so one forward pass gives both queries of a row and
  one momentum pass both keys: :meth:`AdaptorMSD.encode_queries` / :meth:`AdaptorMSD.encode_keys`. Nothing couples
  the rows of a batch inside the Adaptor (LayerNorm is per token), so RFBE
  (:class:`~medvlp_lib.methods.rfbe.RFBE`) wraps it with the exact gradient of the full batch.
* :class:`AdaptorTeacher` -- **a frozen-backbone teacher** for VLCD (:class:`~medvlp_lib.methods.vlcd.VLCD`): the
  frozen image backbone + a trained Adaptor as an image tower, and the Adaptor's text embeddings as the text anchors.
* :class:`MemoryPooling` -- **a class-conditional memory for chest X-rays** (MoMKD's idea,
  :class:`~medvlp_lib.methods.memory.ClassMemory`): per-finding prototypes filled by cosine K-means from the frozen
  report embeddings, and memory-guided attention pooling of the frozen image tokens,

      p_i = W h_i,  score_i = max_{c, j} cos(p_i, C_{c, j}),  a = softmax(score / tau),  v = sum_i a_i h_i,

  trained with the CLIP loss between ``normalize(P_v v)`` and the projected frozen report embedding (the memory is
  fixed after filling; ``W``, ``tau``, ``P_v``, ``P_t`` learn).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..models.adaptor import Adaptor, tokens_from_feature_map
from ..models.encoders import LOGIT_SCALE_INIT, scale_from_logit
from .contrastive import clip_loss
from .memory import ClassMemory
from .msd import MSD, Views

__all__ = ["AdaptorPair", "TokenViews", "AdaptorMSD", "AdaptorTeacher", "TextTable", "MemoryPooling",
           "memory_pool", "fill_memory_from_reports", "backbone_tokens"]


def _check_cached(batch) -> None:
    if not isinstance(batch, dict) or not {"img_tokens", "txt_tokens"} <= set(batch):
        raise ValueError("batch must be a cached batch dict with 'img_tokens' [B, N_v, d_v], 'txt_tokens' "
                         f"[B, N_t, d_t], 'txt_mask' and 'index'; got "
                         f"{list(batch) if isinstance(batch, dict) else type(batch).__name__}")


class AdaptorPair(nn.Module):
    """The Adaptor seen as a dual encoder for :class:`~medvlp_lib.methods.msd.MSD`: ``encode_pair(img_tokens,
    txt_tokens, txt_mask) -> (z_v, z_t)`` (one joint pass), ``scale`` and ``embed_dim``. ``encode_image`` /
    ``encode_text`` exist for MSD's interface check only: the Adaptor has no image-only or text-only pass."""

    def __init__(self, adaptor: Adaptor):
        super().__init__()
        if not isinstance(adaptor, Adaptor):
            raise TypeError(f"adaptor must be an Adaptor, got {type(adaptor).__name__}")
        self.adaptor = adaptor
        self.embed_dim = int(adaptor.embed_dim)

    @property
    def scale(self) -> torch.Tensor:
        return self.adaptor.scale

    def encode_pair(self, img_tokens, txt_tokens, txt_mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.adaptor(img_tokens, txt_tokens, txt_mask)
        dt = self.adaptor.logit_scale.dtype  # float32 under autocast too; float64 in the equivalence test
        return out["image_emb"].to(dt), out["text_emb"].to(dt)

    def encode_image(self, x):
        raise NotImplementedError("the Adaptor embeds image and text jointly: use encode_pair")

    def encode_text(self, texts):
        raise NotImplementedError("the Adaptor embeds image and text jointly: use encode_pair")


@dataclass
class TokenViews(Views):
    """:class:`~medvlp_lib.methods.msd.Views` of a cached batch: ``img_q``/``img_k`` hold the image tokens and
    ``txt_q``/``txt_k`` the text tokens (no augmentation: the cache is fixed, so both views are the batch itself),
    ``txt_mask`` the text padding mask."""
    txt_mask: torch.Tensor | None = None


class AdaptorMSD(MSD):
    """MSD (:class:`~medvlp_lib.methods.msd.MSD`, all its options) training an Adaptor on cached tokens.

    ``training_step(batch)`` takes what :func:`medvlp_lib.data.cache.collate_cached` yields (``img_tokens``,
    ``txt_tokens``, ``txt_mask``, ``index``). The views are the batch itself (frozen tokens have no augmentation
    here), so the uni-modal term scores each online query against its momentum copy: with ``w_uni = 1`` of 11 it
    keeps the online and momentum Adaptors close. ``self.adaptor`` is the online Adaptor.
    """

    def __init__(self, adaptor: Adaptor, **kwargs):
        kwargs.setdefault("image_augment", None)
        kwargs.setdefault("text_augment", None)
        if kwargs["image_augment"] is not None or kwargs["text_augment"] is not None:
            raise ValueError("AdaptorMSD trains on cached frozen tokens: image_augment and text_augment must be None")
        pair = AdaptorPair(adaptor)
        super().__init__(pair, embed_dim=pair.embed_dim, **kwargs)

    @property
    def adaptor(self) -> Adaptor:
        return self.online.adaptor

    def make_views(self, batch: dict) -> TokenViews:
        _check_cached(batch)
        dev, dt = self.online.scale.device, self.online.scale.dtype
        img = batch["img_tokens"].to(dev, dt)
        txt = batch["txt_tokens"].to(dev, dt)
        mask = batch.get("txt_mask")
        mask = None if mask is None else mask.to(dev)
        ids = batch.get("index")
        ids = torch.full((img.shape[0],), -1, dtype=torch.long) if ids is None else torch.as_tensor(ids)
        return TokenViews(img, img, txt, txt, ids.to(dev).long(), txt_mask=mask)

    def _rows(self, views: TokenViews, sl: slice, q: bool):
        m = None if views.txt_mask is None else views.txt_mask[sl]
        return (views.img_q if q else views.img_k)[sl], (views.txt_q if q else views.txt_k)[sl], m

    def encode_queries(self, views: TokenViews, sl: slice):
        return self.online.encode_pair(*self._rows(views, sl, True))

    def encode_keys(self, views: TokenViews, sl: slice):
        return self.momentum_encoder.run("encode_pair", *self._rows(views, sl, False))


# --------------------------------------------------------------------------------------------------- VLCD teacher
def backbone_tokens(image_backbone: nn.Module, images: torch.Tensor, feature_index: int | None) -> torch.Tensor:
    """``[B, N, C]`` tokens of a frozen image encoder's feature map ``feature_index`` (as the embedding cache
    stores them: :mod:`medvlp_lib.data.cache`; ``None`` = the last map)."""
    if feature_index is None:
        fmap = image_backbone.forward_features(images)
    else:
        bb = getattr(image_backbone, "backbone", image_backbone)
        fmap = bb.forward_intermediates(images, intermediates_only=True)[feature_index]
    return tokens_from_feature_map(fmap)


class TextTable(nn.Module):
    """A frozen text tower that looks embeddings up by report text: ``encode_text(texts) -> [B, D]``.

    Built from ``texts`` and their embeddings ``[N, D]``; a report that occurs several times gets the normalised mean
    of its rows. An unknown report is a ``KeyError`` naming it."""

    def __init__(self, texts: Sequence[str], embeddings: torch.Tensor):
        super().__init__()
        if len(texts) != len(embeddings):
            raise ValueError(f"texts ({len(texts)}) and embeddings ({len(embeddings)}) must have the same length")
        index: dict[str, int] = {}
        rows: list[list[int]] = []
        for i, t in enumerate(texts):
            if t not in index:
                index[t] = len(rows)
                rows.append([])
            rows[index[t]].append(i)
        e = embeddings.detach().float()
        self.index = index
        self.register_buffer("table", F.normalize(torch.stack([e[r].mean(0) for r in rows]), dim=-1))

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        missing = [t for t in texts if t not in self.index]
        if missing:
            raise KeyError(f"TextTable has no embedding of the report {missing[0]!r}")
        return self.table[torch.tensor([self.index[t] for t in texts], device=self.table.device)]


class AdaptorTeacher(nn.Module):
    """A frozen image backbone + a trained Adaptor as a VLCD teacher (what :class:`~medvlp_lib.methods.vlcd.VLCD`
    and :func:`~medvlp_lib.methods.vlcd.teacher_image_embedding` call).

    ``encode_image(images)``: the Adaptor's image embedding with the empty-string dummy text (``empty_text``
    ``[1, T, d_t]``, the thesis code's image-only use), L2-normalised; ``image_features(images)``: the image
    ``[CLS]`` state (what a linear probe reads); ``encode_text(texts)``: the ``text_table``'s rows (the Adaptor's text
    embeddings, computed with each report's own film, since the Adaptor has no text-only pass); ``logit_scale``: the
    Adaptor's (VLCD starts its temperature there).
    """

    def __init__(self, image_backbone: nn.Module, adaptor: Adaptor, empty_text: torch.Tensor, text_table: TextTable,
                 feature_index: int | None = -2):
        super().__init__()
        self.image_backbone, self.adaptor, self.text_table = image_backbone, adaptor, text_table
        self.register_buffer("empty_text", empty_text.float().reshape(1, -1, empty_text.shape[-1]))
        self.feature_index = feature_index
        self.logit_scale = adaptor.logit_scale
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: always in eval mode

    @torch.no_grad()
    def _out(self, images: torch.Tensor) -> dict:
        tok = backbone_tokens(self.image_backbone, images, self.feature_index).float()
        return self.adaptor(tok, self.empty_text.to(tok.device).expand(len(tok), -1, -1))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self._out(images)["image_emb"].float()

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return self._out(images)["image_tokens"][:, 0].float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_features(images)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        return self.text_table.encode_text(texts)


# --------------------------------------------------------------------------------------------------- memory pooling
def memory_pool(patch_proj: torch.Tensor, slots: torch.Tensor, values: torch.Tensor, tau: torch.Tensor) -> dict:
    """Memory-guided attention pooling over a batch (MoMKD's pooling, all classes as "findings").

    ``patch_proj [B, N, d]`` (tokens projected into the memory's space), ``slots [K, S, d]`` (unit prototypes,
    detached), ``values [B, N, c]``; ``score_bn = max_{k, s} cos(patch_proj_bn, slots_ks)``, ``a = softmax_n(score /
    tau)``, ``pooled_b = sum_n a_bn values_bn``. Returns ``dict(pooled [B, c], attention [B, N], scores [B, N])``.
    """
    if patch_proj.ndim != 3 or values.ndim != 3 or patch_proj.shape[:2] != values.shape[:2]:
        raise ValueError(f"patch_proj [B, N, d] and values [B, N, c] must share B and N, got "
                         f"{tuple(patch_proj.shape)} and {tuple(values.shape)}")
    if slots.ndim != 3 or slots.shape[-1] != patch_proj.shape[-1]:
        raise ValueError(f"slots must be [K, S, {patch_proj.shape[-1]}], got {tuple(slots.shape)}")
    p = F.normalize(patch_proj, dim=-1)
    score = (p @ slots.detach().flatten(0, 1).T).max(-1).values
    attn = torch.softmax(score / tau, dim=1)
    return {"pooled": (attn[..., None] * values).sum(1), "attention": attn, "scores": score}


@torch.no_grad()
def fill_memory_from_reports(memory: ClassMemory, report_emb: torch.Tensor, labels, iters: int = 20,
                             seed: int = 0) -> None:
    """Fill ``memory`` (``n_classes`` = findings) with per-finding prototypes: cosine K-means of the embeddings of
    the reports that mention each finding (``labels [N, K]`` multi-hot; a report counts for each of its findings).
    A finding with fewer reports than slots repeats its reports (K-means handles that)."""
    y = torch.as_tensor(labels) > 0.5
    if y.ndim != 2 or y.shape != (len(report_emb), memory.n_classes):
        raise ValueError(f"labels must be [N={len(report_emb)}, K={memory.n_classes}] multi-hot, got "
                         f"{tuple(y.shape)}")
    rows, cls = torch.nonzero(y, as_tuple=True)
    missing = sorted(set(range(memory.n_classes)) - set(cls.tolist()))
    if missing:
        raise ValueError(f"findings {missing} have no report to fill their prototypes")
    memory.init_kmeans(report_emb[rows].float(), cls, iters=iters, seed=seed)


class MemoryPooling(nn.Module):
    """Image tokens pooled by a class-conditional memory of report prototypes, trained contrastively on the cache.

    ``memory``: a filled :class:`~medvlp_lib.methods.memory.ClassMemory` in the text embedding's space (``dim =
    d_t``; fixed here); ``image_dim`` / ``text_dim``: the frozen tokens' widths. Learns ``token_proj`` (d_v -> d_t,
    the patch-to-memory projection), ``log_tau`` (init 0.2), the heads ``image_head`` / ``text_head`` (-> embed_dim)
    and ``logit_scale``. ``training_step(cached batch)``: the CLIP loss (:func:`~medvlp_lib.methods.contrastive.
    clip_loss`, symmetric) of the pooled image embedding vs the frozen report embedding (``txt_pooled``).
    ``pool(img_tokens)`` -> ``dict(pooled [B, d_v], attention [B, N])``: the features a probe reads.
    """

    def __init__(self, memory: ClassMemory, image_dim: int, text_dim: int, embed_dim: int = 128,
                 tau_init: float = 0.2):
        super().__init__()
        if not isinstance(memory, ClassMemory) or memory.dim != text_dim:
            raise ValueError(f"memory must be a ClassMemory of dim text_dim={text_dim}")
        self.memory = memory
        self.token_proj = nn.Linear(image_dim, text_dim)
        self.log_tau = nn.Parameter(torch.tensor(float(tau_init)).log())
        self.image_head = nn.Linear(image_dim, embed_dim)
        self.text_head = nn.Linear(text_dim, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))

    @property
    def scale(self) -> torch.Tensor:
        return scale_from_logit(self.logit_scale)

    @property
    def tau(self) -> torch.Tensor:
        return self.log_tau.exp().clamp(0.01, 2.0)

    def pool(self, img_tokens: torch.Tensor) -> dict:
        h = img_tokens.to(self.logit_scale.device).float()
        return memory_pool(self.token_proj(h), self.memory.normalized(), h, self.tau)

    def training_step(self, batch: dict) -> dict:
        _check_cached(batch)
        if "txt_pooled" not in batch:
            raise ValueError("MemoryPooling needs batch['txt_pooled'] (the frozen report embedding)")
        v = F.normalize(self.image_head(self.pool(batch["img_tokens"])["pooled"]), dim=-1)
        t = F.normalize(self.text_head(batch["txt_pooled"].to(v.device).float()), dim=-1)
        loss, parts = clip_loss(v, t, self.scale, image_weight=0.5)
        return {"loss": loss, **parts, "tau": float(self.tau)}

    def forward(self, batch: dict) -> dict:
        return self.training_step(batch)
