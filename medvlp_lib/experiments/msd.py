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
* ``text_augment`` off in ``fast``/``cpu``: the text encoder is frozen and cached, so every novel augmented
  report costs a MiniLM forward pass (about 1 s per step on one core, more than the rest of the step); the
  text views are then identical strings and the text-text uni-modal term only separates the online and
  momentum projection heads. ``gpu`` uses the offline report augmenter (:mod:`medvlp_lib.data.augment`).
* ``cpu`` trains 2 epochs over half of the training split (``n_train`` 1,536 of 3,155 films, 192 steps at
  batch 16; chapter 01's ``clip_batch_size`` trains 6 epochs over all of it) and evaluates on the full test
  split: four methods x three seeds took about 15 minutes with ``--jobs 3`` on two shared cores. (A first
  1-epoch run, 96 steps, left every momentum method at its initial embedding.) It is therefore a test of *early* training, where the paper's claim is that soft targets let
  small batches learn at all; the CLIP row is not chapter 01's number.
"""
from __future__ import annotations

import numpy as np

from . import register
from .clip_baseline import PROFILES as _CLIP_PROFILES
from ..ledger import compare, fmt
from ..pipeline import build_clip, build_dual_encoder, evaluate_dual_encoder, load_benchmark, train_method

__all__ = ["METHODS", "PROFILES", "build_method", "msd_vs_baselines", "CLAIMS"]

METHODS = ("clip", "mm_moco", "albef", "msd")
LABELS = {"clip": "CLIP", "mm_moco": "MM-MoCo", "albef": "ALBEF-style", "msd": "MSD"}

_MSD = dict(batch_size=16, methods=METHODS, alpha=0.3, beta=0.7, albef_alpha=0.4, w_uni=1.0, w_multi=10.0,
            momentum=0.995, queue_size=1024, own_id="mask", text_augment=False, image_augment=True)


def _from_clip(profile: str, **kw) -> dict:
    base = {k: v for k, v in _CLIP_PROFILES[profile].items() if k != "batch_sizes"}
    return {**base, **_MSD, **kw}


PROFILES = {
    "fast": _from_clip("fast"),
    "cpu": _from_clip("cpu", n_train=1536, epochs=2),
    "gpu": _from_clip("gpu", queue_size=4096, text_augment=True),
}

# per-step scalars of the momentum methods kept as (down-sampled) curves in the results
_CURVES = ("loss", "loss_multi", "loss_uni", "uni_share", "target_entropy", "acc_i2t", "acc_t2i", "temperature")


def _curve(history, key: str = "loss", points: int = 60) -> list[float]:
    vals = np.array([h[key] for h in history if key in h], dtype=float)
    if len(vals) <= points:
        return vals.tolist()
    edges = np.linspace(0, len(vals), points + 1).astype(int)
    return [float(vals[a:b].mean()) for a, b in zip(edges[:-1], edges[1:])]


def build_method(kind: str, cfg: dict, seed: int, steps_per_epoch: int = 1):
    """A fresh training method of ``kind`` (one of :data:`METHODS`) on a dual encoder seeded by ``seed``."""
    from ..methods.msd import ALBEF, MSD, MMMoCo
    if kind == "clip":
        return build_clip(cfg, seed)
    if kind not in METHODS:
        raise ValueError(f"unknown method {kind!r}; choose from {METHODS}")
    dual = build_dual_encoder(cfg, seed)
    common = dict(w_uni=cfg["w_uni"], w_multi=cfg["w_multi"], momentum=cfg["momentum"],
                  queue_size=cfg["queue_size"], own_id=cfg["own_id"],
                  image_augment="default" if cfg["image_augment"] else None,
                  text_augment="default" if cfg["text_augment"] else None)
    if kind == "msd":
        return MSD(dual, alpha=cfg["alpha"], beta=cfg["beta"], **common)
    if kind == "mm_moco":
        return MMMoCo(dual, **common)
    return ALBEF(dual, alpha=cfg["albef_alpha"], alpha_warmup_steps=max(1, steps_per_epoch), **common)


def _dual(method):
    """The dual encoder a method trains (CLIP: ``.model``, the momentum methods: ``.online``)."""
    online = getattr(method, "online", None)
    return online if online is not None else method.model


@register("msd_vs_baselines", PROFILES,
          description="CLIP vs MM-MoCo vs ALBEF-style vs MSD at batch 16, equal epochs (chapter 02)")
def msd_vs_baselines(cfg: dict, seed: int) -> dict:
    train, test = load_benchmark(cfg["image_size"], cfg["n_train"], cfg["n_test"], cfg["data_seed"])
    bs = int(cfg["batch_size"])
    steps_per_epoch = max(1, len(train) // bs)
    steps = max(1, int(cfg["epochs"] * len(train)) // bs)
    out = {}
    for kind in cfg["methods"]:
        method = build_method(kind, cfg, seed, steps_per_epoch)
        text = _dual(method).text_encoder
        if text.frozen:  # encode each report once per process (the cache is shared between models)
            text.precompute(train.texts + test.texts)
        history = train_method(method, train, batch_size=bs, steps=steps, lr=cfg["lr"],
                               weight_decay=cfg["weight_decay"], warmup_frac=cfg["warmup_frac"], seed=seed)
        metrics = evaluate_dual_encoder(_dual(method), train, test, probe_fractions=cfg["probe_fractions"],
                                        seed=seed)
        for frac in cfg["probe_fractions"]:
            metrics[f"fewshot_gain@{frac:g}"] = metrics[f"probe_auc@{frac:g}"] - metrics["zero_shot_auc"]
        metrics["steps"] = steps
        metrics["final_loss"] = float(np.mean([h["loss"] for h in history[-max(1, steps // 20):]]))
        metrics["loss_curve"] = _curve(history)
        if kind != "clip":
            metrics["curves"] = {k: _curve(history, k) for k in _CURVES[1:] if k in history[0]}
        out[kind] = metrics
    return out


# ----------------------------------------------------------------------------------------------------
# claims ledger
# ----------------------------------------------------------------------------------------------------
def _tag(rec: dict, entry: dict) -> str:
    return f"n={entry['n']} seeds, profile {rec['profile']}"


def _reversed(diff: float, se: float, z: float = 2.0) -> bool:
    """The difference has the opposite sign to the claim and exceeds ``z`` standard errors."""
    return bool(se == se and diff < 0 and -diff > z * se)  # se != se: NaN (one seed)


def _claim_msd_vs_mmmoco(rec: dict) -> tuple[str, str, str]:
    s = rec["summary"]
    msd, moco = s["msd/i2t_R@1"], s["mm_moco/i2t_R@1"]
    holds, diff, se = compare(msd, moco)
    t_msd, t_moco = s["msd/t2i_R@1"], s["mm_moco/t2i_R@1"]
    ours = (f"i2t R@1 {fmt(msd)} (MSD) vs {fmt(moco)} (MM-MoCo); t2i R@1 {fmt(t_msd)} vs {fmt(t_moco)} "
            f"(batch 16, {_tag(rec, msd)})")
    if holds:
        return ours, "reproduced", (f"MSD beats MM-MoCo by {diff * 100:.1f} i2t R@1 points at batch 16 "
                                    f"(> 2 standard errors, {se * 100:.1f}); the gap is smaller than the paper's "
                                    "22.7 vs 3.5 on MIMIC-CXR.")
    if _reversed(diff, se):
        return ours, "not reproduced", (f"The effect goes the other way: MM-MoCo beats MSD by {-diff * 100:.1f} i2t "
                                        f"R@1 points (> 2 standard errors, {se * 100:.1f}) on the embedded benchmark.")
    return ours, "not reproduced", (f"The MSD - MM-MoCo difference ({diff * 100:+.1f} i2t R@1 points, standard "
                                    f"error {se * 100:.1f}) is not above seed noise on the embedded benchmark.")


def _claim_msd_fewshot(rec: dict) -> tuple[str, str, str]:
    s = rec["summary"]
    frac = "0.1"
    msd, moco = s[f"msd/probe_auc@{frac}"], s[f"mm_moco/probe_auc@{frac}"]
    gain, gain_moco = s[f"msd/fewshot_gain@{frac}"], s[f"mm_moco/fewshot_gain@{frac}"]
    beats, diff, se = compare(msd, moco)
    zero = {"mean": 0.0, "std": 0.0, "n": gain["n"]}
    gains, g, g_se = compare(gain, zero)
    ours = (f"10 % probe AUC {fmt(msd)} (MSD) vs {fmt(moco)} (MM-MoCo); zero-shot -> 10 % gain "
            f"{fmt(gain)} vs {fmt(gain_moco)} AUC points ({_tag(rec, msd)})")
    if beats and gains:
        return ours, "reproduced", (f"MSD's 10 % linear probe beats MM-MoCo's by {diff * 100:.1f} AUC points "
                                    f"(> 2 standard errors, {se * 100:.1f}) and improves on its own zero-shot AUC "
                                    f"by {g * 100:.1f} points.")
    why = []
    if not beats:
        why.append(f"MSD's 10 % probe AUC differs from MM-MoCo's by {diff * 100:+.1f} points (standard error "
                   f"{se * 100:.1f}), " + ("below it beyond seed noise" if _reversed(diff, se) else
                                           "not above seed noise"))
    if not gains:
        why.append(f"MSD's zero-shot -> 10 % gain ({g * 100:+.1f} points, standard error {g_se * 100:.1f}) is "
                   + ("negative beyond seed noise" if _reversed(g, g_se) else "not above seed noise"))
    return ours, "not reproduced", "; ".join(why) + "."


CLAIMS = {"msd-vs-mmmoco": _claim_msd_vs_mmmoco, "msd-fewshot": _claim_msd_fewshot}
