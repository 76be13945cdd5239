"""Chapter 02 experiment: momentum self-distillation (MSD, arXiv 2512.02438) vs its baselines at batch 16.

``msd_vs_baselines`` trains, at batch 16 and for the same number of epochs (so the same number of steps):

* ``clip``    -- CLIP, symmetric InfoNCE over in-batch pairs (chapter 01's recipe, no augmentation);
* ``mm_moco`` -- momentum encoders + queues, one-hot targets (:class:`~medvlp_lib.methods.msd.MMMoCo`);
* ``albef``   -- ALBEF momentum distillation, target = 0.4 teacher + 0.6 one-hot, alpha ramped up over the
  first epoch (:class:`~medvlp_lib.methods.msd.ALBEF`);
* ``msd``     -- soft targets ``0.3 p_q2k + 0.7 p_k2k`` (:class:`~medvlp_lib.methods.msd.MSD`).

The three momentum methods share everything but the multi-modal target (same views, queues of
``queue_size`` per modality, m = 0.995, w_uni = 1, w_multi = 10, own stale keys masked). Every method
starts from the same initial weights (same seed) and sees the same batches. Encoders, image size and data
are chapter 01's (``clip_baseline.PROFILES``: ResNet-18 from scratch on 64 px films, frozen packaged MiniLM +
MLP heads), so the CLIP row is chapter 01's batch-16 CLIP at this profile's data and epochs.

Evaluation: the shared :func:`medvlp_lib.pipeline.evaluate_dual_encoder` (retrieval R@1/5/10, zero-shot
AUC, linear-probe AUC with 1/10/100 % of the labels) plus the paper's "zero-shot to few-shot gain",
``fewshot_gain@f = probe_auc@f - zero_shot_auc``.

Profile choices (documented readings, not the paper's values):

* ``queue_size`` 1,024 in ``fast``/``cpu`` (the paper's 4,096 holds more than our whole 3,155-film training
  split, i.e. keys over an epoch old); 4,096 in ``gpu``.
* ``image_augment`` off in ``fast``/``cpu`` (the momentum methods then see the same film in both views, as CLIP
  does; the image-image uni-modal term compares the online and momentum encoders on it). With the default
  crop/rotation/jitter augmenter on 64 px films and a few hundred steps from scratch, every momentum method sat
  far below CLIP (which chapter 01 trains without augmentation); a seed-0 pilot with a shorter momentum horizon
  (m = 0.95) did not close the gap, switching the augmenter off did. ``cpu`` therefore also trains
  ``augmented`` = ``("msd",)`` once more with the augmenter on (result key ``msd_aug``): the committed
  ``results/msd_vs_baselines.json`` holds the three-seed comparison that chapter 02 discusses. ``gpu`` augments
  (224 px, pretrained encoders, the paper's set-up).
* ``text_augment`` off in ``fast``/``cpu``: the text encoder is frozen and cached, so every novel augmented
  report costs a MiniLM forward pass (about 1 s per step on one core, more than the rest of the step); the
  text views are then identical strings and the text-text uni-modal term only separates the online and
  momentum projection heads. ``gpu`` uses the offline report augmenter (:mod:`medvlp_lib.data.augment`).
* ``cpu`` trains 4 epochs over 1,840 of the 3,155 training films (460 steps at batch 16) with m = 0.99 instead of
  the paper's 0.995, so that the momentum encoder keeps under 1 % of its initial weights (0.99^460 = 0.0098;
  0.995 would need 920 steps, which with five seeds does not fit two hours on two cores), five paired seeds
  (0-4), the loss curves stored (60 bins). Wall-time estimates (``--jobs 2`` on the shared 2-core machine,
  three rounds of seeds): measured 20 steps of CLIP and MSD at batch 16 in one process (0.7 / 0.64 s per step;
  6.3 s at batch 128) and one standard evaluation (2-7 min depending on load), extrapolated: msd_vs_baselines
  (5 models) ~2 h, msd_alpha_beta (5 runs) ~2 h, msd_loss_weights (4) ~1.5 h, msd_momentum_queue (5) ~2 h,
  msd_batch_size (3 + 2 short) ~1.5 h. (The older runs: 192 steps at m = 0.995, three seeds.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..config import Variant, require
from ..methods.msd import ALBEF, MSD, MMMoCo
from ..methods.rfbe import RFBE
from ..models.paper_msd import PAPER
from ..pipeline import evaluate_pretraining, load_pretraining
from ..results import ClaimResult, Comparison, Wording, claim_verdict, fmt, judge, judge_claim
from . import binned_curve, claim, claims_of, fit_run, register
from .clip_baseline import PROFILES as _CLIP_PROFILES
from .clip_baseline import SEEDS
from .clip_baseline import CXRTrainConfig, build_cxr_clip, build_cxr_dual, train_summary

__all__ = ["METHODS", "MSDConfig", "MSDAlphaBetaConfig", "MSDLossWeightsConfig", "MSDMomentumQueueConfig",
           "MSDBatchSizeConfig", "PROFILES", "build_method", "train_and_evaluate", "variant_key", "msd_vs_baselines",
           "msd_alpha_beta", "msd_loss_weights", "msd_momentum_queue", "msd_batch_size", "alpha1_by_reading", "CLAIMS"]

METHODS = ("clip", "mm_moco", "albef", "msd")
LABELS = {"clip": "CLIP", "mm_moco": "MM-MoCo", "albef": "ALBEF-style", "msd": "MSD", "msd_aug": "MSD + image aug."}

Method = Literal["clip", "mm_moco", "albef", "msd"]


@dataclass(frozen=True, kw_only=True)
class MSDConfig(CXRTrainConfig):
    """Chapter 02: chapter 01's data, encoders and schedule (:class:`~.clip_baseline.CXRTrainConfig`) plus the
    momentum methods' settings: ``batch_size``, the ``methods`` trained (and ``augmented``: trained once more
    with the image augmenter on, result key ``<method>_aug``), MSD's target mixture ``alpha`` / ``beta``,
    ALBEF's ``albef_alpha``, the loss weights ``w_uni`` / ``w_multi``, the momentum ``m``, ``queue_size`` keys
    per modality, what to do with a sample's own stale key in the queue (``own_id``), the reading of MSD's alpha term
    (``alpha_teacher``: ``"online"`` or ``"momentum"``, :class:`~medvlp_lib.methods.msd.MSD`) and the view
    augmenters."""
    batch_size: int = 16
    methods: tuple[Method, ...] = METHODS
    alpha: float = 0.3
    beta: float = 0.7
    albef_alpha: float = 0.4
    w_uni: float = 1.0
    w_multi: float = 10.0
    momentum: float = 0.995
    queue_size: int = 1024
    own_id: Literal["mask", "positive", "ignore"] = "mask"
    alpha_teacher: Literal["online", "momentum"] = "online"
    text_augment: bool = False
    image_augment: bool = False
    augmented: tuple[Method, ...] = ()

    def __post_init__(self):
        super().__post_init__()
        require(self, positive=("batch_size", "queue_size"), non_negative=("alpha", "beta", "w_uni", "w_multi"),
                unit=("albef_alpha", "momentum"), unique=("methods", "augmented"))

    def smoke(self) -> "MSDConfig":
        """:meth:`CXRTrainConfig.smoke` at batch 4 with queues of 8 keys (the augmenters stay as configured)."""
        return super().smoke().replace(batch_size=4, queue_size=8)


def _from_clip(profile: str, **changes) -> MSDConfig:
    """Chapter 01's profile (every field but ``batch_sizes``) with the MSD settings' defaults and ``changes``."""
    return MSDConfig.derive(_CLIP_PROFILES[profile], drop=("batch_sizes",), **changes)


PROFILES = {
    "fast": _from_clip("fast"),
    "cpu": _from_clip("cpu", n_train=1840, epochs=4, momentum=0.99, augmented=("msd",)),
    "gpu": _from_clip("gpu", queue_size=PAPER["queue_size"], momentum=PAPER["momentum"], text_augment=True,
                      image_augment=True),
}

# per-step scalars of the momentum methods kept as (down-sampled) curves in the results
_CURVES = ("loss", "loss_multi", "loss_uni", "uni_share", "target_entropy", "acc_i2t", "acc_t2i", "temperature")


def build_method(kind: str, cfg: MSDConfig, seed: int, steps_per_epoch: int = 1):
    """A fresh training method of ``kind`` (one of :data:`METHODS`) on a dual encoder seeded by ``seed``."""
    if kind == "clip":
        return build_cxr_clip(cfg, seed)
    if kind not in METHODS:
        raise ValueError(f"unknown method {kind!r}; choose from {METHODS}")
    dual = build_cxr_dual(cfg, seed)
    common = dict(w_uni=cfg.w_uni, w_multi=cfg.w_multi, momentum=cfg.momentum, queue_size=cfg.queue_size,
                  own_id=cfg.own_id, image_augment="default" if cfg.image_augment else None,
                  text_augment="default" if cfg.text_augment else None)
    if kind == "msd":
        return MSD(dual, alpha=cfg.alpha, beta=cfg.beta, alpha_teacher=cfg.alpha_teacher, **common)
    if kind == "mm_moco":
        return MMMoCo(dual, **common)
    return ALBEF(dual, alpha=cfg.albef_alpha, alpha_warmup_steps=max(1, steps_per_epoch), **common)


def _dual(method):
    """The dual encoder a method trains (CLIP: ``.model``, the momentum methods: ``.online``)."""
    online = getattr(method, "online", None)
    return online if online is not None else method.model


def train_and_evaluate(kind: str, cfg: MSDConfig, seed: int, train, test, sub_batch: int | None = None,
                       tag: str | None = None, steps: int | None = None) -> dict:
    """Train one method of ``kind`` for ``cfg.epochs`` epochs at batch ``cfg.batch_size`` and evaluate it (the
    book's standard metrics).

    With ``sub_batch`` smaller than the batch, each step is an RFBE step (:class:`~medvlp_lib.methods.rfbe.RFBE`:
    all momentum keys first, then gradient accumulation over sub-batches of the query branch), so the batch is an
    effective batch. Equal epochs means the same number of training samples for every batch size, so a larger
    batch takes fewer optimiser steps.
    Adds ``fewshot_gain@f = probe_auc@f - zero_shot_auc``, ``steps``, ``final_loss``, the loss curve and (momentum
    methods) the curves of :data:`_CURVES`.
    """
    bs = cfg.batch_size
    steps_per_epoch = max(1, len(train) // bs)
    steps = int(steps) if steps else max(1, int(cfg.epochs * len(train)) // bs)
    method = build_method(kind, cfg, seed, steps_per_epoch)
    text = _dual(method).text_encoder
    if text.frozen:  # encode each report once per process (the cache is shared between models)
        text.precompute(train.texts + test.texts)
    trained = RFBE(method, sub_batch=int(sub_batch)) if sub_batch and int(sub_batch) < bs else method
    history = fit_run(trained, train, tag=tag or kind, cfg=cfg, batch_size=bs, steps=steps, lr=cfg.lr,
                      weight_decay=cfg.weight_decay, warmup_frac=cfg.warmup_frac, seed=seed)
    metrics = evaluate_pretraining(_dual(method), cfg, train, test, seed=seed)
    for frac in cfg.probe_fractions:
        metrics[f"fewshot_gain@{frac:g}"] = metrics[f"probe_auc@{frac:g}"] - metrics["zero_shot_auc"]
    metrics.update(train_summary(history, steps))
    if kind != "clip":
        metrics["curves"] = {k: binned_curve(history, k) for k in _CURVES[1:] if k in history[0]}
    return metrics


@register("msd_vs_baselines", PROFILES,
          seeds=SEEDS,
          description="CLIP vs MM-MoCo vs ALBEF-style vs MSD at batch 16, equal epochs (chapter 02). cpu: 460 steps "
                      "at m 0.99 (m^steps < 1 %), 5 models x 5 seeds, ~2 h with --jobs 2 (module docstring)")
def msd_vs_baselines(cfg: MSDConfig, seed: int) -> dict:
    train, test = load_pretraining(cfg)
    out = {kind: train_and_evaluate(kind, cfg, seed, train, test) for kind in cfg.methods}
    for kind in cfg.augmented:  # the same method once more with the image augmenter on
        out[f"{kind}_aug"] = train_and_evaluate(kind, cfg.replace(image_augment=True), seed, train, test,
                                                tag=f"{kind}_aug")
    return out


# ----------------------------------------------------------------------------------------------------
# chapter 03: ablations (each variant is MSD with one setting changed; everything else as msd_vs_baselines)
# ----------------------------------------------------------------------------------------------------
def variant_key(name: str, value) -> str:
    """Result key of an ablation variant, e.g. ``ab_0.3_0.7``, ``w_10``, ``m_0.99``, ``q_4096``, ``b_64``."""
    if isinstance(value, (tuple, list)):
        return f"{name}_" + "_".join(f"{v:g}" for v in value)
    return f"{name}_{value:g}"


def _ablation(cfg: MSDConfig, seed: int, variants) -> dict:
    """Train and evaluate MSD once per :class:`~medvlp_lib.config.Variant` (its ``overrides`` are fields of
    :class:`MSDConfig`, plus ``sub_batch`` for RFBE), results filed under the variant's key."""
    train, test = load_pretraining(cfg)
    out = {}
    for v in variants:
        over = dict(v.overrides)
        sub, steps = over.pop("sub_batch", None), over.pop("steps", None)
        out[v.key] = train_and_evaluate(v.name, cfg.replace(**over), seed, train, test, sub_batch=sub,
                                        tag=v.key.replace("/", "_"), steps=steps)
    return out


@dataclass(frozen=True, kw_only=True)
class MSDAlphaBetaConfig(MSDConfig):
    """Chapter 03: MSD once per target mixture ``(alpha, beta)`` in ``alpha_betas`` under the reading
    ``alpha_teacher`` of the profile (keys ``ab_<alpha>_<beta>``), and once more per pair with ``alpha > 0`` in
    ``other_reading_pairs`` under the other reading (keys ``<reading>/ab_<alpha>_<beta>``; a pair with alpha = 0
    is the same run under both readings)."""
    alpha_betas: tuple[tuple[float, float], ...] = ()
    other_reading_pairs: tuple[tuple[float, float], ...] = ()

    def __post_init__(self):
        super().__post_init__()
        require(self, non_negative=("alpha_betas", "other_reading_pairs"),
                unique=("alpha_betas", "other_reading_pairs"))

    def smoke(self) -> "MSDAlphaBetaConfig":
        return super().smoke().replace(alpha_betas=((0.3, 0.7),), other_reading_pairs=((0.3, 0.7),))


@dataclass(frozen=True, kw_only=True)
class MSDLossWeightsConfig(MSDConfig):
    """Chapter 03: MSD with ``w_uni = 1`` once per multi-modal weight in ``w_multis``."""
    w_multis: tuple[float, ...] = ()

    def __post_init__(self):
        super().__post_init__()
        require(self, non_negative=("w_multis",), unique=("w_multis",))

    def smoke(self) -> "MSDLossWeightsConfig":
        return super().smoke().replace(w_multis=(10.0,))


@dataclass(frozen=True, kw_only=True)
class MSDMomentumQueueConfig(MSDConfig):
    """Chapter 03: MSD once per momentum in ``momenta`` and once per queue size in ``queue_sizes``."""
    momenta: tuple[float, ...] = ()
    queue_sizes: tuple[int, ...] = ()

    def __post_init__(self):
        super().__post_init__()
        require(self, unit=("momenta",), positive=("queue_sizes",), unique=("momenta", "queue_sizes"))

    def smoke(self) -> "MSDMomentumQueueConfig":
        return super().smoke().replace(momenta=(0.99,), queue_sizes=(16,))


@dataclass(frozen=True, kw_only=True)
class MSDBatchSizeConfig(MSDConfig):
    """Chapter 03: MSD at each effective batch in ``effective_batches``, RFBE with sub-batches of ``sub_batch``,
    in two arms: equal epochs (keys ``b_<batch>``) and equal optimiser steps (keys ``eqsteps/b_<batch>``: every
    batch takes the largest batch's equal-epoch steps, so a smaller batch sees proportionally fewer samples;
    ``eqsteps/b_<largest>`` is the largest batch's equal-epochs run, filed twice)."""
    effective_batches: tuple[int, ...] = ()
    sub_batch: int = 16

    def __post_init__(self):
        super().__post_init__()
        require(self, positive=("effective_batches", "sub_batch"), unique=("effective_batches",))

    def smoke(self) -> "MSDBatchSizeConfig":
        return super().smoke().replace(effective_batches=(4, 8), sub_batch=4)


def _ablation_profiles(cls, **grids) -> dict:
    """:data:`PROFILES` as ``cls`` with per-profile ablation grids (``name={"fast": ..., "cpu": ..., "gpu": ...}``)."""
    return {p: cls.derive(c, **{k: v[p] for k, v in grids.items()}) for p, c in PROFILES.items()}


_ALPHA_BETA = ((1.0, 0.0), (0.7, 0.3), (0.5, 0.5), (0.3, 0.7), (0.0, 1.0))
_ALPHA_BETA_CPU = ((1.0, 0.0), (0.3, 0.7), (0.0, 1.0))  # the claims' pairs: five runs with the other reading
_OTHER_READING = ((1.0, 0.0), (0.3, 0.7))
"""The pairs run once more under the other reading of the alpha term: the failure claim's (1, 0) and the
paper's (0.3, 0.7) (alpha = 0 pairs are the same run under both readings)."""


def _other_reading(reading: str) -> str:
    return "momentum" if reading == "online" else "online"


@register("msd_alpha_beta", _ablation_profiles(
              MSDAlphaBetaConfig, alpha_betas={"fast": ((1.0, 0.0), (0.3, 0.7)), "cpu": _ALPHA_BETA_CPU, "gpu": _ALPHA_BETA},
              other_reading_pairs={"fast": ((1.0, 0.0),), "cpu": _OTHER_READING, "gpu": _OTHER_READING}),
          seeds=SEEDS,
          description="MSD soft-target mixture (alpha, beta) from (1, 0) to (0, 1), under both readings of the "
                      "alpha term (chapter 03)")
def msd_alpha_beta(cfg: MSDAlphaBetaConfig, seed: int) -> dict:
    """MSD with target ``alpha p_q2k + beta p_k2k`` for each pair in ``cfg.alpha_betas`` under the profile's
    reading of p_q2k (``cfg.alpha_teacher``; keys ``ab_*``), and for each pair in ``cfg.other_reading_pairs`` under
    the other reading (keys ``<reading>/ab_*``)."""
    other = _other_reading(cfg.alpha_teacher)
    variants = [Variant("msd", dict(alpha=a, beta=b), variant_key("ab", (a, b))) for a, b in cfg.alpha_betas]
    variants += [Variant("msd", dict(alpha=a, beta=b, alpha_teacher=other), f"{other}/{variant_key('ab', (a, b))}")
                 for a, b in cfg.other_reading_pairs]
    return _ablation(cfg, seed, variants)


@register("msd_loss_weights", _ablation_profiles(MSDLossWeightsConfig, w_multis={
              "fast": (1.0, 10.0), "cpu": (1.0, 5.0, 10.0, 20.0), "gpu": (1.0, 5.0, 10.0, 20.0)}),
          seeds=SEEDS,
          description="MSD multi-modal loss weight w_multi with w_uni = 1 (chapter 03)")
def msd_loss_weights(cfg: MSDLossWeightsConfig, seed: int) -> dict:
    """MSD with ``w_uni = 1`` and each ``w_multi`` in ``cfg.w_multis``; the curves hold the uni-modal share."""
    return _ablation(cfg, seed, [Variant("msd", dict(w_uni=1.0, w_multi=w), variant_key("w", w))
                                 for w in cfg.w_multis])


@register("msd_momentum_queue", _ablation_profiles(
              MSDMomentumQueueConfig, momenta={"fast": (0.99,), "cpu": (0.9, 0.99, 0.995), "gpu": (0.99, 0.995, 0.999)},
              queue_sizes={"fast": (256,), "cpu": (256, 4096), "gpu": (1024, 16384)}),
          seeds=SEEDS,
          description="MSD momentum m and queue size, one factor at a time (chapter 03)")
def msd_momentum_queue(cfg: MSDMomentumQueueConfig, seed: int) -> dict:
    """One factor at a time around the profile's (m, queue): every m in ``momenta`` at the profile's queue size
    (keys ``m_*``), every size in ``queue_sizes`` at the profile's m (keys ``q_*``; the default run is ``m_<m>``)."""
    variants = [Variant("msd", dict(momentum=m), variant_key("m", m)) for m in cfg.momenta]
    variants += [Variant("msd", dict(queue_size=q), variant_key("q", q)) for q in cfg.queue_sizes]
    return _ablation(cfg, seed, variants)


@register("msd_batch_size", _ablation_profiles(
              MSDBatchSizeConfig, sub_batch={"fast": 16, "cpu": 16, "gpu": 32},
              effective_batches={"fast": (16, 64), "cpu": (16, 64, 256), "gpu": (32, 128, 256, 512)}),
          seeds=SEEDS,
          description="MSD effective batch via RFBE at the memory of one sub-batch, at equal epochs (b_*) and at "
                      "equal optimiser steps (eqsteps/b_*) (chapter 03)")
def msd_batch_size(cfg: MSDBatchSizeConfig, seed: int) -> dict:
    """MSD at each effective batch in ``cfg.effective_batches``, RFBE with sub-batches of ``cfg.sub_batch`` (so
    every run has the activation memory of one sub-batch): the same number of epochs for all (``b_*``), and the
    same number of optimiser steps for all (``eqsteps/b_*``: the largest batch's equal-epoch steps)."""
    train, test = load_pretraining(cfg)
    largest = max(cfg.effective_batches)
    eq_steps = max(1, int(cfg.epochs * len(train)) // largest)
    out = _ablation(cfg, seed, [Variant("msd", dict(batch_size=b, sub_batch=cfg.sub_batch), variant_key("b", b))
                                for b in cfg.effective_batches])
    out["eqsteps"] = {
        variant_key("b", b): (out[variant_key("b", b)] if b == largest else train_and_evaluate(
            "msd", cfg.replace(batch_size=b), seed, train, test, sub_batch=cfg.sub_batch,
            tag=f"eqsteps_{variant_key('b', b)}", steps=eq_steps))
        for b in cfg.effective_batches}
    return out


# ----------------------------------------------------------------------------------------------------
# claims ledger
# ----------------------------------------------------------------------------------------------------
def _tag(rec: dict, entry: dict) -> str:
    return f"n={entry['n']} seeds, profile {rec['profile']}"


_MSD_VS_MMMOCO = Wording(
    reproduced="MSD beats MM-MoCo by {d:.1f} i2t R@1 points at batch 16 (paired 95 % CI [{lo:+.1f}, {hi:+.1f}]); "
               "the gap is smaller than the paper's 22.7 vs 3.5 on MIMIC-CXR.",
    opposed="The effect goes the other way: MM-MoCo beats MSD by {neg:.1f} i2t R@1 points (paired 95 % CI of "
            "MSD - MM-MoCo [{lo:+.1f}, {hi:+.1f}]) on the embedded benchmark.",
    not_reproduced="The MSD - MM-MoCo difference ({d:+.1f} i2t R@1 points, standard error {se:.1f}) is not above seed "
                   "noise on the embedded benchmark.")


PAPER_EFFECT_MSD_VS_MMMOCO = 0.192
"""The paper's MSD - MM-MoCo gap in i2t R@1 at batch 16 (22.7 - 3.5 points on MIMIC-CXR, as a fraction)."""
PAPER_EFFECT_FEWSHOT_GAIN = 0.096
"""The paper's zero-shot -> 10 % linear-probe gain with MSD (SIIM 83.8 -> 93.4 AUC, as a fraction). The paper
gives no MM-MoCo 10 % probe number, so that comparison states no effect (only its direction can decide)."""
PAPER_EFFECT_ALPHA1 = 0.02
"""The claim row's effect for "alpha = 1 fails": the paper reports failure without a number; we state, before the
run, 2 zero-shot AUC points (beta = 1 over alpha = 1) as the least that "fails while the other trains" means."""


@claim("msd-vs-mmmoco", paper="MSD+RFBE", chapter="02", claim="MSD beats MM-MoCo at batch 16 on R@1",
       paper_value="22.7 vs 3.5 R@1 (MIMIC-CXR)", result="msd_vs_baselines")
def _claim_msd_vs_mmmoco(rec: dict) -> tuple[str, str, str]:
    s = rec["summary"]
    msd, moco = s["msd/i2t_R@1"], s["mm_moco/i2t_R@1"]
    t_msd, t_moco = s["msd/t2i_R@1"], s["mm_moco/t2i_R@1"]
    ours = (f"i2t R@1 {fmt(msd)} (MSD) vs {fmt(moco)} (MM-MoCo); t2i R@1 {fmt(t_msd)} vs {fmt(t_moco)} "
            f"(batch 16, {_tag(rec, msd)})")
    return judge_claim(ours, [Comparison(msd, moco, paper_effect=PAPER_EFFECT_MSD_VS_MMMOCO)], _MSD_VS_MMMOCO)


def _fewshot_explanation(verdict: str, beats, gains) -> str:
    if verdict == "reproduced":
        return (f"MSD's 10 % linear probe beats MM-MoCo's by {beats.diff * 100:.1f} AUC points (paired 95 % CI "
                f"[{beats.estimate.lo * 100:+.1f}, {beats.estimate.hi * 100:+.1f}]) and improves on its own zero-shot "
                f"AUC by {gains.diff * 100:.1f} points.")
    why = []
    if not beats.supports:
        why.append(f"MSD's 10 % probe AUC differs from MM-MoCo's by {beats.diff * 100:+.1f} points (standard error "
                   f"{beats.se * 100:.1f}), " + ("below it beyond seed noise" if beats.opposes else
                                                 "not above seed noise"))
    if not gains.supports:
        why.append(f"MSD's zero-shot -> 10 % gain ({gains.diff * 100:+.1f} points, standard error "
                   f"{gains.se * 100:.1f}) is " + ("negative beyond seed noise" if gains.opposes else
                                                    "not above seed noise"))
    return "; ".join(why) + "."


@claim("msd-fewshot", paper="MSD+RFBE", chapter="02", claim="few-shot gain with MSD",
       paper_value="SIIM 83.8 -> 93.4 AUC (10 %)", result="msd_vs_baselines")
def _claim_msd_fewshot(rec: dict) -> tuple[str, str, str]:
    s = rec["summary"]
    frac = "0.1"
    msd, moco = s[f"msd/probe_auc@{frac}"], s[f"mm_moco/probe_auc@{frac}"]
    gain, gain_moco = s[f"msd/fewshot_gain@{frac}"], s[f"mm_moco/fewshot_gain@{frac}"]
    zero = {"mean": 0.0, "std": 0.0, "n": gain["n"]}
    ours = (f"10 % probe AUC {fmt(msd)} (MSD) vs {fmt(moco)} (MM-MoCo); zero-shot -> 10 % gain "
            f"{fmt(gain)} vs {fmt(gain_moco)} AUC points ({_tag(rec, msd)})")
    beats = judge(Comparison(msd, moco))
    gains = judge(Comparison(gain, zero, paper_effect=PAPER_EFFECT_FEWSHOT_GAIN))
    verdict = claim_verdict([beats, gains])
    return ours, verdict, _fewshot_explanation(verdict, beats, gains)


ABLATION_METRIC = "zero_shot_auc"
"""What chapter 03's verdicts rank variants by: at this scale R@1 sits near chance for every method (few hundred
steps, duplicate report texts), so mean zero-shot AUC over the findings is the metric that separates variants."""


def _ab(rec: dict, pair) -> dict:
    return rec["summary"][f"{variant_key('ab', pair)}/{ABLATION_METRIC}"]


_WHY_ZERO = ("with alpha = 1 the target is the stop-gradient copy of the online prediction, so the KL term and its "
             "gradient are exactly zero and only the uni-modal losses train")
_ALPHA1 = Wording(
    reproduced="beta = 1 beats alpha = 1 by {d:.1f} AUC points (paired 95 % CI [{lo:+.1f}, {hi:+.1f}]): " + _WHY_ZERO
               + "; the run does not diverge, it learns no cross-modal alignment.",
    not_reproduced="The beta = 1 - alpha = 1 difference ({d:+.1f} AUC points, standard error {se:.1f}) is not above "
                   "seed noise, although " + _WHY_ZERO + ".")


@claim("msd-alpha1-fails", paper="MSD+RFBE", chapter="03", claim="alpha = 1 fails while beta = 1 trains",
       paper_value="Tables 7/9 (failure, no number)", result="msd_alpha_beta")
def _claim_alpha1_fails(rec: dict) -> tuple[str, str, str]:
    """Judged under the reading of the profile (``alpha_teacher``, default ``"online"``: the paper's equation,
    alpha times the stop-gradient online prediction); the other reading's (1, 0) run (key
    ``<reading>/ab_1_0``) is reported next to it, judged the same way, but does not set the verdict."""
    a1, b1 = _ab(rec, (1.0, 0.0)), _ab(rec, (0.0, 1.0))
    reading = rec["config"].get("alpha_teacher", "online")
    other = _other_reading(reading)
    ours = (f"zero-shot AUC {fmt(a1)} with (alpha, beta) = (1, 0) vs {fmt(b1)} with (0, 1), {reading} reading "
            f"({_tag(rec, a1)})")
    result = judge_claim(ours, [Comparison(b1, a1, paper_effect=PAPER_EFFECT_ALPHA1)], _ALPHA1)
    j = alpha1_by_reading(rec)[other]
    if j is None:
        extra = f" The {other} reading: (re-run pending)."
    else:
        extra = (f" The {other} reading: (1, 0) gives {fmt(j.comparison.b)}, beta = 1 - alpha = 1 = "
                 f"{j.diff * 100:+.1f} AUC points (standard error {j.se * 100:.1f}): {j.verdict} under that reading.")
    return ClaimResult(result[0], result[1], result[2] + extra, result.judgements)


def alpha1_by_reading(rec: dict) -> dict:
    """``{"online": Judgement | None, "momentum": Judgement | None}``: "alpha = 1 fails while beta = 1 trains"
    judged under each reading of the alpha term (:class:`~medvlp_lib.methods.msd.MSD`'s ``alpha_teacher``) as
    the paired comparison beta = 1 over alpha = 1 with the claim's effect (:data:`PAPER_EFFECT_ALPHA1`); the
    profile's own reading uses the keys ``ab_*``, the other ``<reading>/ab_*``. ``None`` where an
    ``msd_alpha_beta`` record lacks that reading's (1, 0) run."""
    reading = rec["config"].get("alpha_teacher", "online")
    b1 = _ab(rec, (0.0, 1.0))
    out = {}
    for r in ("online", "momentum"):
        prefix = "" if r == reading else f"{r}/"
        a1 = rec["summary"].get(f"{prefix}{variant_key('ab', (1.0, 0.0))}/{ABLATION_METRIC}")
        out[r] = None if a1 is None else judge(Comparison(b1, a1, paper_effect=PAPER_EFFECT_ALPHA1))
    return out


def _pair(p) -> str:
    return f"({p[0]:g}, {p[1]:g})"


def _best_ab_wording(best, rival) -> Wording:
    paper = (0.3, 0.7)
    if best == paper:
        return Wording(
            reproduced=f"(0.3, 0.7) ranks first and beats the runner-up {_pair(rival)} by {{d:.1f}} AUC points "
                       "(paired 95 % CI [{lo:+.1f}, {hi:+.1f}]).",
            not_reproduced=f"(0.3, 0.7) ranks first, but its lead over {_pair(rival)} ({{d:+.1f}} AUC points, "
                           "standard error {se:.1f}) is within seed noise, so 'best' is not shown.")
    first = f"{_pair(best)} ranks first, {{neg:.1f}} AUC points above (0.3, 0.7) (standard error {{se:.1f}}; "
    return Wording(reproduced="", not_reproduced=first + "within seed noise).", opposed=first + "beyond seed noise).")


@claim("msd-best-ab", paper="MSD+RFBE", chapter="03", claim="(alpha, beta) = (0.3, 0.7) is best",
       paper_value="Tables 7/9", result="msd_alpha_beta")
def _claim_best_ab(rec: dict) -> tuple[str, str, str]:
    pairs = [tuple(p) for p in rec["config"]["alpha_betas"]]
    entries = {p: _ab(rec, p) for p in pairs}
    ranked = sorted(pairs, key=lambda p: -entries[p]["mean"])
    best, paper = ranked[0], (0.3, 0.7)
    ours = ("zero-shot AUC " + "; ".join(f"{_pair(p)} {fmt(entries[p])}" for p in pairs)
            + f" ({_tag(rec, entries[paper])})")
    # the paper's setting against the runner-up when it ranks first, else against the setting that does
    rival = ranked[1] if best == paper else best
    return judge_claim(ours, [Comparison(entries[paper], entries[rival])], _best_ab_wording(best, rival))


_WMULTI = Wording(
    reproduced="w_multi = 10 beats w_multi = 1 by {d:.1f} AUC points (paired 95 % CI [{lo:+.1f}, {hi:+.1f}]).",
    opposed="The effect goes the other way: w_multi = 1 beats w_multi = 10 by {neg:.1f} AUC points (paired 95 % CI of "
            "10 - 1 [{lo:+.1f}, {hi:+.1f}]).",
    not_reproduced="The w_multi = 10 - w_multi = 1 difference ({d:+.1f} AUC points, standard error {se:.1f}) is not "
                   "above seed noise.")


@claim("msd-wmulti", paper="MSD+RFBE", chapter="03", claim="w_multi = 10 beats w_multi = 1", paper_value="Eq. 5",
       result="msd_loss_weights")
def _claim_wmulti(rec: dict) -> tuple[str, str, str]:
    s = rec["summary"]
    w10, w1 = s[f"{variant_key('w', 10.0)}/{ABLATION_METRIC}"], s[f"{variant_key('w', 1.0)}/{ABLATION_METRIC}"]
    ours = f"zero-shot AUC {fmt(w10)} with w_multi = 10 vs {fmt(w1)} with w_multi = 1 ({_tag(rec, w10)})"
    return judge_claim(ours, [Comparison(w10, w1)], _WMULTI)


CLAIMS = claims_of(__name__)
