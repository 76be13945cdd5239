"""Chapter 01 experiment: CLIP at batch 16 vs batch 128 on the embedded benchmark.

Both runs see the same number of training samples (equal epochs), so the small batch takes more,
noisier steps with fewer negatives each. Evaluation (shared by every chapter, ``medvlp_lib.eval``):
zero-shot AUC per finding with prompt ensembles, image<->text retrieval R@1/5/10 on the test split
(a retrieved report whose text is identical to the query's own report counts as a hit), and linear-probe
AUC with 1 %, 10 %, 100 % of the training labels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import require
from ..pipeline import DualEncoderConfig, build_clip, evaluate_dual_encoder, load_benchmark
from ..results import Comparison, Wording, compare, fmt, judge_claim
from ..train import fit
from . import binned_curve, claim, claims_of, register

__all__ = ["CXRTrainConfig", "ClipConfig", "PROFILES", "clip_batch_size", "train_summary", "CLAIMS"]


@dataclass(frozen=True, kw_only=True)
class CXRTrainConfig(DualEncoderConfig):
    """A dual encoder trained on the embedded chest X-ray benchmark (chapters 01-03): the data (``image_size``,
    ``n_train`` / ``n_test`` films, ``None`` = the whole split, ``data_seed``), the schedule (``epochs``, AdamW
    ``lr`` / ``weight_decay``, linear warm-up over ``warmup_frac`` of the steps) and the linear-probe label
    fractions of the evaluation."""
    image_size: int = 64
    n_train: int | None = None
    n_test: int | None = None
    data_seed: int = 0
    epochs: int = 6
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_frac: float = 0.05
    probe_fractions: tuple[float, ...] = (0.01, 0.1, 1.0)

    def __post_init__(self):
        super().__post_init__()
        require(self, positive=("image_size", "n_train", "n_test", "epochs", "lr"),
                non_negative=("data_seed", "weight_decay"), unit=("warmup_frac", "probe_fractions"))


@dataclass(frozen=True, kw_only=True)
class ClipConfig(CXRTrainConfig):
    """Chapter 01: CLIP trained once per batch size in ``batch_sizes`` for the same number of epochs."""
    batch_sizes: tuple[int, ...] = (16, 128)

    def __post_init__(self):
        super().__post_init__()
        require(self, positive=("batch_sizes",), unique=("batch_sizes",))


_CPU = ClipConfig(image_encoder="resnet18", text_encoder=None, text_trainable="none", embed_dim=128, proj="mlp",
                  pretrained=False, lr=1e-3, weight_decay=0.1, warmup_frac=0.05, batch_sizes=(16, 128),
                  probe_fractions=(0.01, 0.1, 1.0), data_seed=0, image_size=64, n_train=None, n_test=None, epochs=6)
PROFILES = {
    "fast": _CPU.replace(n_train=768, n_test=256, epochs=1),
    "cpu": _CPU,
    "gpu": _CPU.replace(image_encoder="resnet50", pretrained=True, text_trainable="last:4", image_size=224, epochs=30,
                        lr=1e-4),
}


def train_summary(history, steps: int) -> dict:
    """``steps``, ``final_loss`` (mean of the last 5 % of steps) and the binned ``loss_curve`` of a training run."""
    return {"steps": steps, "final_loss": float(np.mean([h["loss"] for h in history[-max(1, steps // 20):]])),
            "loss_curve": binned_curve(history)}


@register("clip_batch_size", PROFILES, description="CLIP at batch 16 vs 128, equal epochs (chapter 01)")
def clip_batch_size(cfg: ClipConfig, seed: int) -> dict:
    train, test = load_benchmark(cfg.image_size, cfg.n_train, cfg.n_test, cfg.data_seed)
    out = {}
    for bs in cfg.batch_sizes:
        steps = max(1, cfg.epochs * len(train) // bs)
        method = build_clip(cfg, seed)
        if method.model.text_encoder.frozen:  # encode each report once per process (the cache is shared)
            method.model.text_encoder.precompute(train.texts + test.texts)
        history = fit(method, train, batch_size=bs, steps=steps, lr=cfg.lr,
                      weight_decay=cfg.weight_decay, warmup_frac=cfg.warmup_frac, seed=seed)
        metrics = evaluate_dual_encoder(method.model, train, test, probe_fractions=cfg.probe_fractions, seed=seed)
        metrics.update(train_summary(history, steps))
        out[f"b{bs}"] = metrics
    return out


_SMALL_BATCH = Wording(
    reproduced="At equal epochs batch 128 beats batch 16 by {d:.1f} R@1 points (> 2 standard errors, {se:.1f}).",
    not_reproduced="The batch-128 advantage ({d:+.1f} R@1 points, standard error {se:.1f}) is not above seed noise "
                   "on the embedded benchmark.{probe}")


def _probe_context(s: dict) -> str:
    """The full-label linear probe and the step counts of both runs: context for the explanation, not part of
    the verdict."""
    probe_small, probe_large = s.get("b16/probe_auc@1"), s.get("b128/probe_auc@1")
    if not (probe_small and probe_large):
        return ""
    reverse, pdiff, _ = compare(probe_small, probe_large)
    steps = (s.get("b16/steps", {}).get("mean"), s.get("b128/steps", {}).get("mean"))
    return (f" The full-label linear probe {'favours batch 16' if reverse else 'differs'} by {pdiff * 100:+.1f} "
            f"AUC points ({fmt(probe_small)} vs {fmt(probe_large)})"
            + (f"; at equal epochs batch 16 takes {steps[0]:.0f} optimiser steps to batch 128's {steps[1]:.0f}."
               if all(steps) else "."))


@claim("clip-small-batch", paper="MSD+RFBE", chapter="01", result="clip_batch_size",
       claim="Plain contrastive learning (CLIP) degrades at small batch size",
       paper_value="motivation (MM-MoCo 3.5 % R@1 at batch 16)")
def _claim_clip_small_batch(rec: dict) -> tuple[str, str, str]:
    s = rec["summary"]
    small, large = s["b16/i2t_R@1"], s["b128/i2t_R@1"]
    ours = (f"i2t R@1 {fmt(small)} (batch 16) vs {fmt(large)} (batch 128); zero-shot AUC "
            f"{fmt(s['b16/zero_shot_auc'])} vs {fmt(s['b128/zero_shot_auc'])} (n={small['n']} seeds, "
            f"profile {rec['profile']})")
    return judge_claim(ours, [Comparison(large, small)], _SMALL_BATCH, probe=_probe_context(s))


CLAIMS = claims_of(__name__)
