"""VLCD chapter experiments: teacher cache lookups, a tiny end-to-end run, claim evaluators on hand-made records."""
from __future__ import annotations

import math

import pytest
import torch

from medvlp_lib.experiments import vlcd as X
from medvlp_lib.methods.vlcd import VLCD, Predistill, teacher_image_embedding

from test_vlcd import TinyStudent, TinyTeacher, _batch

torch.set_num_threads(1)


def test_teacher_cache_equals_live_teacher_and_is_checked():
    torch.manual_seed(0)
    teacher, student = TinyTeacher(), TinyStudent()
    b = _batch(n=4)
    live = VLCD(student, teacher, lam=0.1, mu=1.0)  # freezes the teacher (eval-mode BN) before we cache
    cache = torch.zeros(10, 6)
    with torch.no_grad():
        cache[[3, 1, 7, 0]] = teacher_image_embedding(teacher, b["image"])
    cached = VLCD(student, teacher, lam=0.1, mu=1.0, teacher_cache=cache)
    calls = teacher.image_calls
    out_c = cached.training_step({**b, "index": torch.tensor([3, 1, 7, 0])})
    assert teacher.image_calls == calls  # the cache replaces the teacher forward
    out_l = live.training_step(b)
    assert float(out_c["loss"].detach()) == pytest.approx(float(out_l["loss"].detach()), rel=1e-6)
    # a wrong row gives a different loss (the lookup really uses the index)
    out_w = cached.training_step({**b, "index": torch.tensor([1, 3, 7, 0])})
    assert float(out_w["loss"].detach()) != pytest.approx(float(out_l["loss"].detach()), rel=1e-6)
    with pytest.raises(ValueError, match="index"):
        cached.training_step(b)
    with pytest.raises(ValueError, match="augment"):
        VLCD(student, teacher, teacher_cache=cache, augment=lambda x: x)
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        Predistill(student, teacher, teacher_cache=torch.zeros(3))


def test_tiny_end_to_end_students(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDVLP_CACHE", str(tmp_path))
    from medvlp_lib.experiments import get
    cfg = get("vlcd_students").config("fast", dict(n_train=48, n_test=40, teacher_steps=1, teacher_batch=16, steps=2,
                                                   batch_size=16, predistill_crops=32, predistill_steps=1,
                                                   probe_n=48))
    out = X.vlcd_students(cfg, seed=0)
    assert X.teacher_path(cfg).is_file() and str(X.teacher_path(cfg)).startswith(str(tmp_path))
    for key in ("teacher", "mobilenetv3"):
        assert key in out
    for res in (out["teacher"], out["mobilenetv3"]["clip"], out["mobilenetv3"]["vlcd"]):
        for k in ("clean", "phone", "drop"):
            assert math.isfinite(res[k])
        assert 0 <= res["clean"] <= 1 and set(res["clean_per_label"]) <= set(X.FINDINGS)
    assert "final_l_gnd" in out["mobilenetv3"]["vlcd"] and "final_l_gnd" not in out["mobilenetv3"]["clip"]
    assert out["teacher"]["params"] > 5 * out["mobilenetv3"]["params"]
    # a second call loads the cached teacher (same weights) instead of training again
    w = next(X.get_teacher(cfg).image_proj.parameters()).clone()
    X._TEACHERS.clear()

    def no_training(*a, **k):
        raise AssertionError("teacher retrained although a checkpoint exists")
    monkeypatch.setattr(X, "fit", no_training)
    assert torch.equal(next(X.get_teacher(cfg).image_proj.parameters()), w)


def _e(mean, std=0.01, n=3):
    return {"mean": mean, "std": std, "n": n}


def test_claim_match_teacher():
    base = {"teacher/clean": _e(0.70)}
    rec = {"profile": "cpu", "summary": {**base, "mobilenetv3/vlcd/clean": _e(0.71),
                                         "efficientnet_b0/vlcd/clean": _e(0.69, 0.02)}}
    assert X._claim_match_teacher(rec)[1] == "reproduced"
    rec["summary"]["efficientformer_l1/vlcd/clean"] = _e(0.60)
    ours, verdict, why = X._claim_match_teacher(rec)
    assert verdict == "not reproduced" and "EfficientFormer-L1" in why and "60.0" in ours
    one_seed = {"profile": "fast", "summary": {k: _e(v["mean"], 0.0, 1) for k, v in rec["summary"].items()}}
    assert X._claim_match_teacher(one_seed)[1] == "pending"  # "not worse" cannot be judged without seed noise


def test_claim_predistill_and_lambda():
    rec = {"profile": "cpu", "summary": {"pre/phone": _e(0.65), "nopre/phone": _e(0.60), "pre/clean": _e(0.7),
                                         "nopre/clean": _e(0.7)}}
    assert X._claim_predistill(rec)[1] == "reproduced"
    rec["summary"]["pre/phone"] = _e(0.605)
    assert X._claim_predistill(rec)[1] == "not reproduced"
    lam = {f"lam{l:g}/clean": _e(m) for l, m in [(0, 0.6), (0.01, 0.62), (0.1, 0.7), (1, 0.64), (10, 0.5)]}
    config = {"lams": [0.0, 0.01, 0.1, 1.0, 10.0]}
    assert X._claim_lambda({"profile": "cpu", "summary": lam, "config": config})[1] == "reproduced"
    lam["lam1/clean"] = _e(0.75)
    ours, verdict, why = X._claim_lambda({"profile": "cpu", "summary": lam, "config": config})
    assert verdict == "not reproduced" and "lambda = 1" in why
    lam["lam1/clean"] = _e(0.705)
    assert "flat" in X._claim_lambda({"profile": "cpu", "summary": lam, "config": config})[2]
    assert X._claim_lambda({"profile": "cpu", "summary": lam, "config": {"lams": [0.0, 1.0]}})[1] == "not testable here"


def test_claim_efficiency():
    def row(model, name, frac, speed, batch):
        return dict(model=model, timm_name=name, size=224, batch=batch, param_fraction_vs_teacher=frac,
                    speedup_vs_teacher=speed)
    rows = [row("ResNet-50 (teacher)", "resnet50", 1.0, 1.0, b) for b in (1, 32)]
    rows += [row("MobileNetV3-Large", "mobilenetv3_large_100", 0.18, s, b) for s, b in ((4.7, 1), (6.3, 32))]
    rec = {"rows": rows, "batches": [1, 32], "threads": 1, "loadavg_before": [1.0, 1.0, 1.0]}
    assert X._claim_efficiency(rec)[1] == "reproduced"
    rec["rows"] = rows + [row("EfficientFormer-L1", "efficientformer_l1", 0.48, s, b) for s, b in ((1.5, 1), (2.0, 32))]
    assert X._claim_efficiency(rec)[1] == "not reproduced"
