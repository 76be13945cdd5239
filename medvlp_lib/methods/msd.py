"""Momentum self-distillation (MSD, arXiv 2512.02438) and its baselines MM-MoCo and ALBEF.

Notation. A *query* ``q_i`` comes from the online encoder of one modality; the *key set*
``K = [k_1 .. k_B ; queue]`` holds the momentum-encoder keys of the other modality for the current
batch (row ``i`` is the positive of query ``i`` unless ``pos`` says otherwise) followed by that
modality's :class:`~medvlp_lib.methods.momentum.MomentumQueue`. With ``s = 1/tau`` (the dual
encoder's ``scale`` = ``exp(logit_scale)``, passed to every loss here as ``scale``):

    p_q2k(i) = softmax(s * q_i K^T)          the online prediction
    p_k2k(i) = softmax(s * k_i K^T)          k_i = momentum key of sample i (in K's modality)
    target(i) = (alpha * stopgrad(p_q2k(i)) + beta * p_k2k(i)) / (alpha + beta)
    L_multi   = mean_i KL(target(i) || p_q2k(i)),   averaged over image->text and text->image.

This is the reading documented in ``shared/papers/REFERENCE_NOTES.md`` (the paper has no public
code). ``alpha + beta`` need not be 1: the target is renormalised so it stays a distribution; with
``alpha + beta = 1`` the renormalisation is a no-op.

Why alpha = 1, beta = 0 gives *no* learning signal (the paper reports "training failed"): for any
fixed target t, d KL(t || softmax(z)) / dz = softmax(z) * sum(t) - t = p - t. With t = stopgrad(p)
this is p - p = 0 for every logit, so neither encoder nor the temperature receives any gradient from
L_multi. (A test asserts the gradient is zero to rounding.) With beta > 0 the target is pulled towards
p_k2k, a distribution that puts the most mass on the sample's own key but shares it with keys that
are *similar to it* (e.g. the many "heart size normal, lungs clear" reports), i.e. a soft label.

Two readings of the alpha term (``alpha_teacher`` of :class:`MSD`, ``q_teacher`` of the losses). The paper
says only that MSD combines "query-to-key" and "key-to-key" similarity distributions:

* (a) ``alpha_teacher="online"`` (default, the reading above): p_q2k is the *online* prediction, detached. It
  gives no gradient of its own, so alpha only rescales the weight of the beta term, and alpha = 1 learns nothing
  ("training failed" as a standstill).
* (b) ``alpha_teacher="momentum"``: p_q2k is the *momentum* encoder's query-to-key distribution,
  ``softmax(s * q^m_i K^T)`` with q^m_i the momentum embedding of the query's own sample (ALBEF's teacher
  without its one-hot part). It does give a gradient, and with alpha = 1 the model distils only its own slow
  copy, with no positive pair anywhere in the target: a self-referential objective that can drift or collapse
  (the paper reports that alpha = 1 *diverges*). Chapter 03 runs the (alpha, beta) ablation under both.

Reading of k_i: by default (``k2k="positive"``) k_i is the momentum key of the query's paired sample
in the *keys'* modality (for an image query, the momentum text embedding of its own report), so
p_k2k is text-text similarity and needs no cross-modal alignment to be meaningful: this is why
beta = 1 trains. ``k2k="teacher"`` instead uses the momentum encoder's version of the query itself
(ALBEF's momentum-distillation teacher, a cross-modal similarity).

Baselines behind the same signature ``fn(q, keys, *, k_same, scale, alpha, beta, pos, q_ids,
key_ids, own_id)``:
* :func:`mm_moco_loss`: cross-entropy with one-hot targets over ``[batch keys; queue]`` (MoCo-style
  InfoNCE across modalities).
* :func:`albef_loss`: ALBEF's momentum distillation, target = alpha * softmax(s * k_same K^T) +
  (1 - alpha) * one-hot, with ``k_same`` the momentum version of the query (teacher).

Uni-modal grounding (:func:`uni_modal_loss`): InfoNCE between two augmented views of the same modality,
the online query of view 1 against [momentum keys of view 2; same-modality queue], hard labels.
Total (paper Eq. 5): ``L = (w_uni * L_uni + w_multi * L_multi) / (w_uni + w_multi)``, w_uni = 1,
w_multi = 10 (:func:`combine_losses`, which also returns each term's share for logging).

Own-id handling: the queue stores sample ids; a key (other than the query's positive) carrying the
query's own sample id is a stale copy of its positive. ``own_id="mask"`` removes such keys from every
distribution (default), ``"positive"`` counts them as extra positives in hard (one-hot) targets, which
become uniform over all positives, and leaves soft MSD targets unchanged; ``"ignore"`` treats them as
ordinary negatives (ALBEF/MoCo behaviour). Negative ids mean "unknown" and never match.

Temperature: every similarity uses the dual encoder's learnable multiplier ``scale`` (``exp(logit_scale)``
capped at :data:`~medvlp_lib.models.encoders.MAX_SCALE` = 100, the library's one convention); targets are
built with a detached scale, so the temperature learns only from the prediction side, as in ALBEF.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.augment import ImageAugmenter, ReportAugmenter
from .contrastive import as_scale
from .momentum import MomentumEncoder, MomentumQueue, gather_with_offset, momentum_schedule

__all__ = ["soft_targets", "msd_loss", "mm_moco_loss", "albef_loss", "uni_modal_loss", "combine_losses",
           "MULTIMODAL_LOSSES", "OWN_ID_MODES", "ALPHA_TEACHERS", "MSD", "MMMoCo", "ALBEF", "Views", "Keys"]

OWN_ID_MODES = ("mask", "positive", "ignore")
ALPHA_TEACHERS = ("online", "momentum")


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------
def _check(q: torch.Tensor, keys: torch.Tensor, pos, q_ids, key_ids, own_id: str):
    if not isinstance(q, torch.Tensor) or q.ndim != 2:
        raise ValueError(f"q must be a [B, D] tensor of queries, got "
                         f"{tuple(q.shape) if isinstance(q, torch.Tensor) else type(q).__name__}")
    if not isinstance(keys, torch.Tensor) or keys.ndim != 2 or keys.shape[1] != q.shape[1]:
        raise ValueError(f"keys must be a [N, {q.shape[1]}] tensor (same D as q), got "
                         f"{tuple(keys.shape) if isinstance(keys, torch.Tensor) else type(keys).__name__}")
    if own_id not in OWN_ID_MODES:
        raise ValueError(f"own_id must be one of {OWN_ID_MODES}, got {own_id!r}")
    b, n = q.shape[0], keys.shape[0]
    if pos is None:
        if n < b:
            raise ValueError(f"keys has {n} rows but there are {b} queries: the first B rows of keys must be "
                             "the queries' positives (or pass pos=)")
        pos = torch.arange(b, device=q.device)
    elif isinstance(pos, range):  # checked without reading a tensor (no device sync per call)
        if len(pos) != b or (b and (min(pos[0], pos[-1]) < 0 or max(pos[0], pos[-1]) >= n)):
            raise ValueError(f"pos must be [B={b}] indices into keys (0..{n - 1}), got {pos}")
        pos = torch.arange(pos.start, pos.stop, pos.step, device=q.device)
    else:
        pos = torch.as_tensor(pos, device=q.device, dtype=torch.long)
        if pos.shape != (b,) or (b and (int(pos.min()) < 0 or int(pos.max()) >= n)):
            raise ValueError(f"pos must be [B={b}] indices into keys (0..{n - 1}), got shape {tuple(pos.shape)}")
    same = None
    if (q_ids is None) != (key_ids is None):
        raise ValueError("give both q_ids and key_ids (sample ids of queries and keys) or neither")
    if q_ids is not None:
        q_ids = torch.as_tensor(q_ids, device=q.device)
        key_ids = torch.as_tensor(key_ids, device=q.device)
        if q_ids.shape != (b,) or key_ids.shape != (n,):
            raise ValueError(f"q_ids must be [B={b}] and key_ids [N={n}], got {tuple(q_ids.shape)} and "
                             f"{tuple(key_ids.shape)}")
        same = (key_ids[None, :] == q_ids[:, None]) & (q_ids[:, None] >= 0)
        same[torch.arange(b, device=q.device), pos] = False
    return pos, same


def _mask(logits: torch.Tensor, same, own_id: str) -> torch.Tensor:
    if same is not None and own_id == "mask":
        return logits.masked_fill(same, torch.finfo(logits.dtype).min)
    return logits


def _hard_targets(like: torch.Tensor, pos: torch.Tensor, same, own_id: str) -> torch.Tensor:
    t = torch.zeros_like(like)
    t[torch.arange(like.shape[0], device=like.device), pos] = 1.0
    if same is not None and own_id == "positive":
        t = t + same.to(t.dtype)
        t = t / t.sum(dim=1, keepdim=True)
    return t


def _ce(target: torch.Tensor, log_p: torch.Tensor, kl: bool, reduction: str) -> torch.Tensor:
    per = -(target * log_p).sum(dim=1)
    if kl:
        per = per + torch.xlogy(target, target).sum(dim=1)
    if reduction == "mean":
        return per.mean()
    if reduction == "sum":
        return per.sum()
    if reduction == "none":
        return per
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _parts(prefix: str, target: torch.Tensor, log_p: torch.Tensor, pos: torch.Tensor) -> dict:
    with torch.no_grad():
        p = log_p.exp()
        rows = torch.arange(p.shape[0], device=p.device)
        ent = -torch.xlogy(target, target).sum(1).mean()
        return {f"{prefix}target_entropy": ent, f"{prefix}p_pos": p[rows, pos].mean(),
                f"{prefix}acc": (p.argmax(1) == pos).to(p.dtype).mean()}


def _check_teacher(q: torch.Tensor, q_teacher) -> torch.Tensor:
    if not isinstance(q_teacher, torch.Tensor) or q_teacher.shape != q.shape:
        got = tuple(q_teacher.shape) if isinstance(q_teacher, torch.Tensor) else type(q_teacher).__name__
        raise ValueError(f"q_teacher must have the queries' shape {tuple(q.shape)}, got {got}")
    return q_teacher.detach().to(q.dtype)


# ----------------------------------------------------------------------------------------------------
# pure losses
# ----------------------------------------------------------------------------------------------------
def soft_targets(q: torch.Tensor, k_same: torch.Tensor | None, keys: torch.Tensor, *, scale, alpha: float = 0.3,
                 beta: float = 0.7, pos=None, q_ids=None, key_ids=None, own_id: str = "mask",
                 q_teacher: torch.Tensor | None = None) -> torch.Tensor:
    """MSD soft targets ``(alpha * p_q2k + beta * p_k2k) / (alpha + beta)``, detached, shape ``[B, N]``.

    ``q [B, D]`` online queries, ``keys [N, D]`` = [momentum batch keys; queue] of the other modality,
    ``k_same [B, D]`` the momentum key of each query's own sample (default ``keys[pos]``, i.e.
    ``keys[:B]``). Rows sum to 1. ``alpha, beta >= 0`` with ``alpha + beta > 0``. ``q_teacher [B, D]``
    (reading (b), see the module docstring): ``p_q2k`` from the momentum encoder's embedding of the query
    sample instead of the online query.
    """
    pos, same = _check(q, keys, pos, q_ids, key_ids, own_id)
    if alpha < 0 or beta < 0 or alpha + beta <= 0:
        raise ValueError(f"alpha and beta must be >= 0 with alpha + beta > 0, got alpha={alpha}, beta={beta}")
    if k_same is None:
        k_same = keys[pos]
    if k_same.shape != q.shape:
        raise ValueError(f"k_same must have the queries' shape {tuple(q.shape)}, got {tuple(k_same.shape)}")
    with torch.no_grad():
        s = as_scale(scale, q).detach()
        k = keys.detach()
        t = torch.zeros(q.shape[0], keys.shape[0], dtype=q.dtype, device=q.device)
        if alpha > 0:
            src = _check_teacher(q, q_teacher) if q_teacher is not None else q
            t = t + alpha * F.softmax(_mask(s * src.detach() @ k.T, same, own_id), dim=1)
        if beta > 0:
            t = t + beta * F.softmax(_mask(s * k_same.detach() @ k.T, same, own_id), dim=1)
        return t / (alpha + beta)


def msd_loss(q: torch.Tensor, keys: torch.Tensor, *, k_same: torch.Tensor | None = None, scale,
             alpha: float = 0.3, beta: float = 0.7, pos=None, q_ids=None, key_ids=None,
             own_id: str = "mask", reduction: str = "mean",
             q_teacher: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """``KL(target || p_q2k)`` with :func:`soft_targets` (see module docstring); returns ``(loss, parts)``.

    Reading (a), ``q_teacher=None``: the alpha part of the target is the online prediction itself,
    ``exp(log_softmax(logits)).detach()`` -- bit-identical to the probabilities the backward pass uses, so
    alpha = 1, beta = 0 gives a zero gradient up to rounding. Reading (b), ``q_teacher [B, D]`` = the momentum
    encoder's embedding of each query's own sample: the alpha part is the momentum query-to-key distribution
    ``softmax(s q_teacher K^T)`` (ALBEF's teacher without its one-hot part), which does give a gradient.
    """
    pos, same = _check(q, keys, pos, q_ids, key_ids, own_id)
    if alpha < 0 or beta < 0 or alpha + beta <= 0:
        raise ValueError(f"alpha and beta must be >= 0 with alpha + beta > 0, got alpha={alpha}, beta={beta}")
    s = as_scale(scale, q)
    log_p = F.log_softmax(_mask(s * q @ keys.T, same, own_id), dim=1)
    target = torch.zeros_like(log_p)
    if alpha > 0:
        if q_teacher is None:
            target = target + alpha * log_p.detach().exp()
        else:
            with torch.no_grad():
                qt = _check_teacher(q, q_teacher)
                target = target + alpha * F.softmax(_mask(s.detach() * qt @ keys.detach().T, same, own_id), dim=1)
    if beta > 0:
        if k_same is None:
            k_same = keys[pos]
        if k_same.shape != q.shape:
            raise ValueError(f"k_same must have the queries' shape {tuple(q.shape)}, got {tuple(k_same.shape)}")
        with torch.no_grad():
            p_k2k = F.softmax(_mask(s.detach() * k_same.detach() @ keys.detach().T, same, own_id), dim=1)
        target = target + beta * p_k2k
    target = target / (alpha + beta)
    loss = _ce(target, log_p, kl=True, reduction=reduction)
    return loss, _parts("", target, log_p, pos)


def mm_moco_loss(q: torch.Tensor, keys: torch.Tensor, *, k_same: torch.Tensor | None = None, scale,
                 alpha: float | None = None, beta: float | None = None, pos=None,
                 q_ids=None, key_ids=None, own_id: str = "mask", reduction: str = "mean") -> tuple[torch.Tensor, dict]:
    """MoCo-style InfoNCE: cross-entropy with one-hot targets over ``[batch keys; queue]``.

    ``k_same``, ``alpha`` and ``beta`` are accepted for a common signature and ignored. With
    ``own_id="positive"`` the target is uniform over the positive and the query's stale queue copies.
    """
    pos, same = _check(q, keys, pos, q_ids, key_ids, own_id)
    s = as_scale(scale, q)
    log_p = F.log_softmax(_mask(s * q @ keys.T, same, own_id), dim=1)
    target = _hard_targets(log_p.detach(), pos, same, own_id)
    return _ce(target, log_p, kl=False, reduction=reduction), _parts("", target, log_p, pos)


def albef_loss(q: torch.Tensor, keys: torch.Tensor, *, k_same: torch.Tensor | None = None, scale,
               alpha: float = 0.4, beta: float | None = None, pos=None, q_ids=None,
               key_ids=None, own_id: str = "mask", reduction: str = "mean") -> tuple[torch.Tensor, dict]:
    """ALBEF momentum distillation: CE to ``alpha * softmax(s * k_same K^T) + (1 - alpha) * one-hot``.

    ``k_same`` is the teacher query: the momentum encoder's embedding of the query's own input (same
    modality as ``q``); ``alpha`` in [0, 1] (ALBEF: 0.4, ramped up during the first epoch); ``beta`` is
    ignored. ``alpha = 0`` reduces to :func:`mm_moco_loss`.
    """
    pos, same = _check(q, keys, pos, q_ids, key_ids, own_id)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] for albef_loss, got {alpha}")
    if k_same is None:
        raise ValueError("albef_loss needs k_same = the momentum (teacher) embedding of each query, [B, D]")
    if k_same.shape != q.shape:
        raise ValueError(f"k_same must have the queries' shape {tuple(q.shape)}, got {tuple(k_same.shape)}")
    s = as_scale(scale, q)
    log_p = F.log_softmax(_mask(s * q @ keys.T, same, own_id), dim=1)
    target = _hard_targets(log_p.detach(), pos, same, own_id)
    if alpha > 0:
        with torch.no_grad():
            teacher = F.softmax(_mask(s.detach() * k_same.detach() @ keys.detach().T, same, own_id), dim=1)
        target = alpha * teacher + (1 - alpha) * target
    return _ce(target, log_p, kl=False, reduction=reduction), _parts("", target, log_p, pos)


def uni_modal_loss(q: torch.Tensor, keys: torch.Tensor, *, scale, pos=None,
                   q_ids=None, key_ids=None, own_id: str = "mask",
                   reduction: str = "mean") -> tuple[torch.Tensor, dict]:
    """Uni-modal InfoNCE: online view-1 queries ``q`` vs ``keys`` = [momentum view-2 keys; same-modality
    queue] with hard labels (row ``pos[i]``, default ``i``, is the positive)."""
    return mm_moco_loss(q, keys, scale=scale, pos=pos, q_ids=q_ids,
                        key_ids=key_ids, own_id=own_id, reduction=reduction)


MULTIMODAL_LOSSES: dict[str, Callable[..., tuple[torch.Tensor, dict]]] = {
    "msd": msd_loss, "mm_moco": mm_moco_loss, "albef": albef_loss}


def combine_losses(l_uni: torch.Tensor, l_multi: torch.Tensor, w_uni: float = 1.0,
                   w_multi: float = 10.0) -> tuple[torch.Tensor, dict]:
    """Paper Eq. 5: ``(w_uni * L_uni + w_multi * L_multi) / (w_uni + w_multi)``.

    Parts: ``loss_uni``, ``loss_multi`` and their weighted shares of the total (``uni_share``,
    ``multi_share``, summing to 1), which show whether training "collapses into the easier uni-modal
    objective" (the paper's reason for w_multi = 10).
    """
    if w_uni < 0 or w_multi < 0 or w_uni + w_multi <= 0:
        raise ValueError(f"w_uni and w_multi must be >= 0 with a positive sum, got {w_uni}, {w_multi}")
    l_uni = torch.as_tensor(l_uni)
    l_multi = torch.as_tensor(l_multi)
    loss = (w_uni * l_uni + w_multi * l_multi) / (w_uni + w_multi)
    with torch.no_grad():
        a, b = w_uni * l_uni.detach(), w_multi * l_multi.detach()
        den = (a + b).clamp_min(torch.finfo(a.dtype).tiny if a.dtype.is_floating_point else 1e-30)
        parts = {"loss_uni": l_uni.detach(), "loss_multi": l_multi.detach(), "uni_share": a / den,
                 "multi_share": b / den}
    return loss, parts


# ----------------------------------------------------------------------------------------------------
# the method module
# ----------------------------------------------------------------------------------------------------
@dataclass
class Views:
    """Two augmented views of a batch: queries use ``*_q``, momentum keys use ``*_k``."""
    img_q: torch.Tensor
    img_k: torch.Tensor
    txt_q: list[str]
    txt_k: list[str]
    ids: torch.Tensor

    def __len__(self) -> int:
        return int(self.img_q.shape[0])


@dataclass
class Keys:
    """Momentum keys of the whole batch plus a snapshot of both queues (taken before this step), and the key sets
    every query is scored against, concatenated once per step (not once per RFBE sub-batch):
    ``img_all = [img; img_queue]`` with sample ids ``img_all_ids = [batch ids; img_queue_ids]``, same for text.

    Under ``torch.distributed`` ``img``/``txt`` hold the *global* batch's keys (all ranks, rank order), ``ids``
    their sample ids and ``offset`` the row of this rank's first query (:func:`_gather_keys`); in one process
    ``ids`` are the views' ids and ``offset`` is 0.
    """
    img: torch.Tensor
    txt: torch.Tensor
    img_queue: torch.Tensor
    img_queue_ids: torch.Tensor
    txt_queue: torch.Tensor
    txt_queue_ids: torch.Tensor
    img_all: torch.Tensor
    img_all_ids: torch.Tensor
    txt_all: torch.Tensor
    txt_all_ids: torch.Tensor
    ids: torch.Tensor | None = None
    offset: int = 0


def _gather_keys(img: torch.Tensor, txt: torch.Tensor, ids: torch.Tensor):
    """``(img, txt, ids, offset)`` of the global batch under ``torch.distributed`` (all-gathered in rank order,
    ``offset`` = this rank's first row), so each rank scores its queries against the same key set as one process
    on the concatenated batch would, with positives at ``offset + i``. Single process: unchanged, offset 0."""
    img_all, offset = gather_with_offset(img)
    if img_all is img:
        return img, txt, ids, 0
    return img_all, gather_with_offset(txt)[0], gather_with_offset(ids)[0], offset


def _default_image_aug():
    return ImageAugmenter()


def _default_text_aug():
    return ReportAugmenter()


class MSD(nn.Module):
    """MSD training method around a dual encoder (trainer contract: ``training_step``/``after_optimizer_step``).

    ``dual`` must provide ``encode_image(x) -> [B, D]`` and ``encode_text(list[str]) -> [B, D]``
    (L2-normalised) and the similarity multiplier as the property ``scale`` (``exp(logit_scale)``, capped; see
    :data:`~medvlp_lib.models.encoders.MAX_SCALE`). Holds: ``online`` (the dual encoder),
    ``momentum_encoder`` (EMA copy), ``image_queue`` and ``text_queue`` (size ``queue_size``), and a
    ``step`` buffer. ``targets`` selects the multi-modal loss: ``"msd"`` (default), ``"mm_moco"`` or
    ``"albef"`` (see :data:`MULTIMODAL_LOSSES`).

    Per step: two views per modality (``image_augment``/``text_augment``; ``None`` = identity); the
    momentum encoder embeds the key views; online queries of view 1 are scored against
    [batch keys; queue] of the other modality (multi-modal) and of their own modality (uni-modal).
    ``after_optimizer_step`` does ONE EMA update (momentum ``m``, or the cosine schedule
    ``m -> momentum_end`` over ``total_steps`` if both are given) and ONE enqueue of this step's keys
    with their sample ids. ``batch`` = dict(image=[B,C,H,W], text=list[str], index=LongTensor[B]).

    Defaults follow the paper: alpha 0.3, beta 0.7, w_uni 1, w_multi 10, m 0.995, queue 4096.
    ``alpha_teacher``: ``"online"`` (reading (a)) or ``"momentum"`` (reading (b)) of the alpha term; see the
    module docstring.

    Views and keys (our reading; the paper does not spell it out): the online encoders embed view 1 of
    each modality (queries), the momentum encoders embed view 2 (keys, which are also what is enqueued).
    Multi-modal: image query i vs [momentum text keys of the batch; text queue], positive = row i (the
    text key of its own report), and symmetrically for text queries; uni-modal: image query i vs
    [momentum image keys; image queue], positive = its own view 2. With ``k2k="teacher"`` (ALBEF's
    default here) the teacher of an image query is the momentum embedding of the same image's view 2,
    which saves a third forward pass; ALBEF itself feeds the teacher the query's own view.
    """

    manual_backward = False

    def __init__(self, dual: nn.Module, *, targets: str = "msd", alpha: float = 0.3, beta: float = 0.7,
                 w_uni: float = 1.0, w_multi: float = 10.0, momentum: float = 0.995,
                 momentum_end: float | None = None, total_steps: int | None = None, queue_size: int = 4096,
                 own_id: str = "mask", k2k: str | None = None, alpha_teacher: str = "online",
                 image_augment="default", text_augment="default",
                 alpha_warmup_steps: int = 0, embed_dim: int | None = None):
        super().__init__()
        for attr in ("encode_image", "encode_text", "scale"):
            if not hasattr(dual, attr):
                raise TypeError(f"dual must provide encode_image, encode_text and the property scale; missing {attr!r}")
        if targets not in MULTIMODAL_LOSSES:
            raise ValueError(f"targets must be one of {tuple(MULTIMODAL_LOSSES)}, got {targets!r}")
        if own_id not in OWN_ID_MODES:
            raise ValueError(f"own_id must be one of {OWN_ID_MODES}, got {own_id!r}")
        k2k = k2k or ("teacher" if targets == "albef" else "positive")
        if k2k not in ("positive", "teacher"):
            raise ValueError(f"k2k must be 'positive' or 'teacher', got {k2k!r}")
        if alpha_teacher not in ALPHA_TEACHERS:
            raise ValueError(f"alpha_teacher must be one of {ALPHA_TEACHERS}, got {alpha_teacher!r}")
        if alpha_teacher == "momentum" and targets != "msd":
            raise ValueError("alpha_teacher='momentum' is a reading of MSD's alpha term; it needs targets='msd'")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if (momentum_end is None) != (total_steps is None):
            raise ValueError("give both momentum_end and total_steps for a momentum schedule, or neither")
        combine_losses(torch.tensor(0.0), torch.tensor(0.0), w_uni, w_multi)  # validates the weights
        if targets == "msd" and (alpha < 0 or beta < 0 or alpha + beta <= 0):
            raise ValueError(f"alpha and beta must be >= 0 with alpha + beta > 0, got {alpha}, {beta}")
        if targets == "albef" and not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1] for ALBEF targets, got {alpha}")
        dim = embed_dim or getattr(dual, "embed_dim", None)
        if not isinstance(dim, int) or dim <= 0:
            raise ValueError("embedding size unknown: dual has no int .embed_dim; pass embed_dim=")
        self.online = dual
        self.momentum_encoder = MomentumEncoder(dual)
        dtype = dual.scale.dtype
        self.image_queue = MomentumQueue(dim, queue_size, dtype=dtype)
        self.text_queue = MomentumQueue(dim, queue_size, dtype=dtype)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.targets, self.alpha, self.beta, self.w_uni, self.w_multi = targets, alpha, beta, w_uni, w_multi
        self.momentum, self.momentum_end, self.total_steps = momentum, momentum_end, total_steps
        self.own_id, self.k2k, self.alpha_teacher = own_id, k2k, alpha_teacher
        self.alpha_warmup_steps = alpha_warmup_steps
        self.image_augment = _default_image_aug() if image_augment == "default" else image_augment
        self.text_augment = _default_text_aug() if text_augment == "default" else text_augment
        self._pending: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    # --- delegation so evaluation code can use the method like the dual encoder
    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.online.encode_image(x)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        return self.online.encode_text(texts)

    @property
    def scale(self) -> torch.Tensor:
        """The online dual encoder's similarity multiplier (1/temperature), with gradient."""
        return self.online.scale

    # --- schedule values
    def current_momentum(self) -> float:
        if self.total_steps is None:
            return float(self.momentum)
        return momentum_schedule(int(self.step), self.total_steps, self.momentum, self.momentum_end)

    def current_alpha(self) -> float:
        if self.alpha_warmup_steps > 0:
            return float(self.alpha) * min(1.0, (int(self.step) + 1) / self.alpha_warmup_steps)
        return float(self.alpha)

    # --- the three stages (RFBE calls them separately)
    def make_views(self, batch: dict) -> Views:
        if not isinstance(batch, dict) or "image" not in batch or "text" not in batch:
            raise ValueError("batch must be a dict with 'image' [B,C,H,W], 'text' list[str] and 'index' [B]")
        x, texts = batch["image"], batch["text"]
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(f"batch['image'] must be a [B, C, H, W] tensor, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if isinstance(texts, str) or len(texts) != x.shape[0]:
            raise ValueError(f"batch['text'] must be a list of {x.shape[0]} reports, got "
                             f"{type(texts).__name__} of length {len(texts)}")
        dev = self.online.scale.device
        x = x.to(dev)
        ids = batch.get("index")
        if ids is None:
            ids = torch.full((x.shape[0],), -1, dtype=torch.long)
        ids = torch.as_tensor(ids).to(dev)
        if ids.shape != (x.shape[0],) or ids.dtype.is_floating_point:
            raise ValueError(f"batch['index'] must be an integer tensor [B={x.shape[0]}] of sample ids, got "
                             f"{tuple(ids.shape)} {ids.dtype}")
        ids = ids.long()
        texts = list(texts)
        if self.image_augment is None:
            img_q, img_k = x, x
        else:
            img_q, img_k = self.image_augment(x), self.image_augment(x)
        if self.text_augment is None:
            txt_q, txt_k = texts, texts
        else:
            txt_q, txt_k = list(self.text_augment(texts)), list(self.text_augment(texts))
        return Views(img_q, img_k, txt_q, txt_k, ids)

    @torch.no_grad()
    def compute_keys(self, views: Views, chunk: int | None = None) -> Keys:
        """Momentum keys for the whole batch (in chunks of ``chunk`` rows if given) + queue snapshots."""
        b = len(views)
        chunk = b if not chunk else chunk
        img, txt = [], []
        for s in range(0, b, max(chunk, 1)):
            img.append(self.momentum_encoder.run("encode_image", views.img_k[s:s + chunk]))
            txt.append(self.momentum_encoder.run("encode_text", views.txt_k[s:s + chunk]))
        img, txt, ids, offset = _gather_keys(torch.cat(img), torch.cat(txt), views.ids)  # global batch (DDP)
        iq, iq_ids, tq, tq_ids = (self.image_queue.keys(), self.image_queue.ids(), self.text_queue.keys(),
                                  self.text_queue.ids())
        return Keys(img, txt, iq, iq_ids, tq, tq_ids, torch.cat([img, iq]), torch.cat([ids, iq_ids]),
                    torch.cat([txt, tq]), torch.cat([ids, tq_ids]), ids=ids, offset=offset)

    def query_loss(self, views: Views, keys: Keys, start: int = 0, end: int | None = None
                   ) -> tuple[torch.Tensor, dict]:
        """Loss (mean over queries ``start:end``) of online queries against the full key set."""
        end = len(views) if end is None else end
        sl = slice(start, end)
        ksl = slice(keys.offset + start, keys.offset + end)  # the queries' own rows in the (global) key batch
        qi = self.online.encode_image(views.img_q[sl])
        qt = self.online.encode_text(views.txt_q[sl])
        s = self.scale
        k_img, k_txt = keys.img_all.to(qi.dtype), keys.txt_all.to(qi.dtype)
        id_img, id_txt = keys.img_all_ids, keys.txt_all_ids
        common = dict(scale=s, pos=range(ksl.start, ksl.stop), q_ids=views.ids[sl], own_id=self.own_id)
        fn = MULTIMODAL_LOSSES[self.targets]
        alpha = self.current_alpha()
        if self.k2k == "positive":
            ks_i2t, ks_t2i = keys.txt[ksl], keys.img[ksl]
        else:  # teacher: the momentum version of the query itself
            ks_i2t, ks_t2i = keys.img[ksl], keys.txt[ksl]
        teach_i2t, teach_t2i = {}, {}
        if self.alpha_teacher == "momentum":  # reading (b): the momentum encoder's own query-to-key distribution
            teach_i2t, teach_t2i = {"q_teacher": keys.img[ksl]}, {"q_teacher": keys.txt[ksl]}
        l_i2t, p_i2t = fn(qi, k_txt, k_same=ks_i2t, alpha=alpha, beta=self.beta, key_ids=id_txt, **teach_i2t, **common)
        l_t2i, p_t2i = fn(qt, k_img, k_same=ks_t2i, alpha=alpha, beta=self.beta, key_ids=id_img, **teach_t2i, **common)
        l_multi = (l_i2t + l_t2i) / 2
        parts = {"loss_i2t": l_i2t.detach(), "loss_t2i": l_t2i.detach(),
                 "acc_i2t": p_i2t["acc"], "acc_t2i": p_t2i["acc"],
                 "target_entropy": (p_i2t["target_entropy"] + p_t2i["target_entropy"]) / 2}
        if self.w_uni > 0:
            l_i2i, _ = uni_modal_loss(qi, k_img, key_ids=id_img, **common)
            l_t2t, _ = uni_modal_loss(qt, k_txt, key_ids=id_txt, **common)
            l_uni = (l_i2i + l_t2t) / 2
            parts.update(loss_i2i=l_i2i.detach(), loss_t2t=l_t2t.detach())
        else:
            l_uni = torch.zeros((), dtype=l_multi.dtype, device=l_multi.device)
        loss, cparts = combine_losses(l_uni, l_multi, self.w_uni, self.w_multi)
        parts.update(cparts)
        parts["temperature"] = (1.0 / s).detach()
        return loss, parts

    def set_pending(self, views: Views, keys: Keys) -> None:
        """Remember this step's keys; :meth:`after_optimizer_step` enqueues them once (this rank's rows: the queue
        all-gathers them, so it receives the global batch in rank order)."""
        own = slice(keys.offset, keys.offset + len(views))
        self._pending = (keys.img[own].detach(), keys.txt[own].detach(), views.ids.detach())

    # --- trainer contract
    def training_step(self, batch: dict) -> dict:
        views = self.make_views(batch)
        keys = self.compute_keys(views)
        loss, parts = self.query_loss(views, keys)
        self.set_pending(views, keys)
        out = {k: float(v) for k, v in parts.items()}
        out.update(loss=loss, momentum=self.current_momentum(), queue_filled=len(self.image_queue))
        return out

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """ONE EMA update of the momentum encoder, ONE enqueue of the last step's keys, step += 1."""
        self.momentum_encoder.update(self.online, self.current_momentum())
        if self._pending is not None:
            k_img, k_txt, ids = self._pending
            self.image_queue.enqueue(k_img, ids)
            self.text_queue.enqueue(k_txt, ids)
            self._pending = None
        self.step += 1


class MMMoCo(MSD):
    """MSD with one-hot targets over [batch keys; queue] (the paper's MM-MoCo baseline)."""

    def __init__(self, dual: nn.Module, **kwargs):
        kwargs.setdefault("targets", "mm_moco")
        super().__init__(dual, **kwargs)


class ALBEF(MSD):
    """MSD with ALBEF momentum-distillation targets (alpha 0.4 by default, teacher = momentum query)."""

    def __init__(self, dual: nn.Module, **kwargs):
        kwargs.setdefault("targets", "albef")
        kwargs.setdefault("alpha", 0.4)
        super().__init__(dual, **kwargs)
