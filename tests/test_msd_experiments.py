"""Tests for the chapter 02 experiment (medvlp_lib.experiments.msd): a tiny run and the claim evaluators."""
from __future__ import annotations

import pytest
import torch

from medvlp_lib import experiments
from medvlp_lib.experiments import msd as exp_msd
from medvlp_lib.ledger import CLAIMS as LEDGER_CLAIMS




def test_registered_with_every_profile_and_same_encoders_as_chapter_01():
    from medvlp_lib.experiments.clip_baseline import PROFILES as CLIP
    exp = experiments.get("msd_vs_baselines")
    assert set(exp.profiles) == {"fast", "cpu", "gpu"}
    for p in ("fast", "cpu", "gpu"):
        cfg = exp.config(p)
        assert cfg.batch_size == 16 and cfg.methods == exp_msd.METHODS
        assert (cfg.alpha, cfg.beta) == (0.3, 0.7)
        # CLIP trains without augmentation on cpu: the momentum methods match it there, the gpu profile augments
        assert cfg.image_augment is (p == "gpu")
        for key in ("image_encoder", "text_encoder", "image_size", "n_test", "embed_dim", "lr", "pretrained"):
            assert getattr(cfg, key) == getattr(CLIP[p], key), (p, key)
    assert exp.config("cpu").augmented == ("msd",)


def test_claim_ids_are_ledger_rows():
    rows = {c.id: c for c in LEDGER_CLAIMS}
    for cid in exp_msd.CLAIMS:
        expected = ("02", "msd_vs_baselines") if cid in ("msd-vs-mmmoco", "msd-fewshot") else ("03", None)
        assert cid in rows and rows[cid].chapter == expected[0]
        if expected[1]:
            assert rows[cid].result == expected[1]
    assert set(exp_msd.CLAIMS) <= set(experiments.claim_evaluators())


def test_build_method_kinds():
    from medvlp_lib.methods.clip import CLIP
    from medvlp_lib.methods.msd import ALBEF, MSD, MMMoCo
    cfg = experiments.get("msd_vs_baselines").config("fast")
    kinds = {k: exp_msd.build_method(k, cfg, 0, steps_per_epoch=10) for k in exp_msd.METHODS}
    assert isinstance(kinds["clip"], CLIP)
    assert type(kinds["mm_moco"]) is MMMoCo and kinds["mm_moco"].targets == "mm_moco"
    assert type(kinds["albef"]) is ALBEF and kinds["albef"].alpha == 0.4 and kinds["albef"].alpha_warmup_steps == 10
    assert type(kinds["msd"]) is MSD and (kinds["msd"].alpha, kinds["msd"].beta) == (0.3, 0.7)
    assert kinds["msd"].image_queue.feats.shape[0] == cfg.queue_size
    # same seed -> same initial image tower for every method (a paired comparison)
    first = [next(exp_msd._dual(m).image_encoder.parameters()) for m in kinds.values()]
    assert all(torch.equal(first[0], w) for w in first[1:])
    with pytest.raises(ValueError):
        exp_msd.build_method("simclr", cfg, 0)


def test_tiny_run_produces_the_keys():
    rec = experiments.run("msd_vs_baselines", "fast", seeds=[0], write=False, verbose=False,
                          overrides={"n_train": 64, "n_test": 48, "probe_fractions": (0.5, 1.0),
                                     "augmented": ("msd",)})
    per = rec["per_seed"]["0"]
    assert set(per) == set(exp_msd.METHODS) | {"msd_aug"}  # msd_aug: MSD once more with the image augmenter on
    for kind, m in per.items():
        for key in ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "zero_shot_auc",
                    "probe_auc@0.5", "probe_auc@1", "fewshot_gain@0.5", "fewshot_gain@1", "steps", "final_loss",
                    "loss_curve"):
            assert key in m, (kind, key)
        assert m["steps"] == 4 and len(m["loss_curve"]) == 4
        assert m["fewshot_gain@1"] == pytest.approx(m["probe_auc@1"] - m["zero_shot_auc"])
        if kind != "clip":
            assert {"loss_multi", "loss_uni", "uni_share", "target_entropy"} <= set(m["curves"])
    assert "msd/i2t_R@1" in rec["summary"] and "mm_moco/probe_auc@1" in rec["summary"]


def _entry(values):
    import numpy as np
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0, "n": int(a.size),
            "values": a.tolist()}


def _record(msd_r1, moco_r1, msd_probe, moco_probe, msd_zs, moco_zs):
    s = {}
    for name, r1, probe, zs in (("msd", msd_r1, msd_probe, msd_zs), ("mm_moco", moco_r1, moco_probe, moco_zs)):
        s[f"{name}/i2t_R@1"] = _entry(r1)
        s[f"{name}/t2i_R@1"] = _entry(r1)
        s[f"{name}/probe_auc@0.1"] = _entry(probe)
        s[f"{name}/zero_shot_auc"] = _entry(zs)
        s[f"{name}/fewshot_gain@0.1"] = _entry([p - z for p, z in zip(probe, zs)])
    return {"profile": "cpu", "summary": s}


def test_claim_msd_vs_mmmoco_verdicts():
    fn = exp_msd.CLAIMS["msd-vs-mmmoco"]
    ours, verdict, why = fn(_record([0.20, 0.22, 0.21], [0.04, 0.03, 0.05], [.8] * 3, [.8] * 3, [.6] * 3, [.6] * 3))
    assert verdict == "reproduced" and "MSD" in ours and "n=3" in ours and "cpu" in ours
    _, verdict, why = fn(_record([0.05, 0.10, 0.02], [0.04, 0.03, 0.05], [.8] * 3, [.8] * 3, [.6] * 3, [.6] * 3))
    assert verdict == "not reproduced" and "seed noise" in why
    _, verdict, why = fn(_record([0.01, 0.02, 0.015], [0.10, 0.12, 0.11], [.8] * 3, [.8] * 3, [.6] * 3, [.6] * 3))
    assert verdict == "not reproduced" and "other way" in why  # wrong direction, beyond noise
    _, verdict, _ = fn(_record([0.30], [0.01], [.8], [.8], [.6], [.6]))
    assert verdict == "not reproduced"  # one seed is never evidence


def test_claim_msd_fewshot_verdicts():
    fn = exp_msd.CLAIMS["msd-fewshot"]
    good = _record([.1] * 3, [.1] * 3, [0.90, 0.91, 0.92], [0.80, 0.81, 0.79], [0.70, 0.71, 0.69], [0.7] * 3)
    ours, verdict, why = fn(good)
    assert verdict == "reproduced" and "10 %" in ours
    # MSD's probe no better than MM-MoCo's
    _, verdict, why = fn(_record([.1] * 3, [.1] * 3, [0.80, 0.81, 0.79], [0.80, 0.82, 0.79], [0.6] * 3, [0.6] * 3))
    assert verdict == "not reproduced" and "MM-MoCo" in why and "not above seed noise" in why
    _, verdict, why = fn(_record([.1] * 3, [.1] * 3, [0.70, 0.71, 0.69], [0.80, 0.81, 0.79], [0.6] * 3, [0.6] * 3))
    assert verdict == "not reproduced" and "below it beyond seed noise" in why
    # MSD beats MM-MoCo but gains nothing over its own zero-shot AUC
    _, verdict, why = fn(_record([.1] * 3, [.1] * 3, [0.90, 0.91, 0.92], [0.80, 0.81, 0.79], [0.90, 0.92, 0.91],
                                 [0.7] * 3))
    assert verdict == "not reproduced" and "gain" in why


def test_ledger_rows_evaluate_without_error():
    from medvlp_lib.ledger import evaluate_claims
    rows = {r["id"]: r for r in evaluate_claims()}
    for cid in exp_msd.CLAIMS:
        assert rows[cid]["verdict"] in ("reproduced", "not reproduced", "pending")
