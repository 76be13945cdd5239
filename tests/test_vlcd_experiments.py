"""VLCD chapter experiments: teacher cache lookups, a tiny end-to-end run, claim evaluators on hand-made records."""
from __future__ import annotations

import math

import numpy as np
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
    monkeypatch.setattr(X, "fit_run", no_training)
    assert torch.equal(next(X.get_teacher(cfg).image_proj.parameters()), w)


SEEDS = (0, 1, 2, 3, 4)
NOISE = (0.004, -0.003, 0.002, -0.004, 0.001)


def _e(mean, spread=1.0, n=5):
    """A 5-seed summary entry: ``mean`` plus a fixed per-seed pattern scaled by ``spread`` (paired noise)."""
    vals = [mean + spread * d for d in NOISE[:n]]
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "n": n, "values": vals, "seeds": list(SEEDS[:n])}


def _shift(mean, diffs):
    """An entry whose paired differences to ``_e(mean_b)`` are ``diffs`` (mean + pattern + diffs)."""
    vals = [mean + d + e for d, e in zip(diffs, NOISE)]
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "n": 5, "values": vals, "seeds": list(SEEDS)}


def test_claim_match_teacher_verdicts():
    base = {"teacher/clean": _e(0.70)}
    rec = {"profile": "cpu", "summary": {**base, "mobilenetv3/vlcd/clean": _e(0.71),
                                         "efficientnet_b0/vlcd/clean": _e(0.695)}}
    assert X._claim_match_teacher(rec)[1] == "reproduced"
    rec["summary"]["efficientformer_l1/vlcd/clean"] = _e(0.60)
    ours, verdict, why = X._claim_match_teacher(rec)
    assert verdict == "contradicted" and "EfficientFormer-L1" in why and "60.0" in ours
    # within the margin on average but too noisy to clear it: inconclusive
    rec["summary"]["efficientformer_l1/vlcd/clean"] = _shift(0.70, [-0.08, 0.06, -0.07, 0.05, 0.0])
    assert X._claim_match_teacher(rec)[1] == "inconclusive"
    three = {"profile": "cpu", "summary": {k: _e(v["mean"], n=3) for k, v in rec["summary"].items()}}
    assert X._claim_match_teacher(three)[1] == "pending"  # fewer than 5 paired seeds


def test_claim_beats_alone_verdicts():
    s = {f"{n}/vlcd/clean": _e(0.72) for n in X.STUDENT_NAMES} | {f"{n}/clip/clean": _e(0.65) for n in X.STUDENT_NAMES}
    assert X._claim_beats_alone({"profile": "cpu", "summary": s})[1] == "reproduced"
    s["efficientnet_b0/clip/clean"] = _e(0.80)
    ours, verdict, why = X._claim_beats_alone({"profile": "cpu", "summary": s})
    assert verdict == "contradicted" and "alone beats" in why
    s["efficientnet_b0/clip/clean"] = _shift(0.72, [0.05, -0.06, 0.04, -0.05, 0.01])
    assert X._claim_beats_alone({"profile": "cpu", "summary": s})[1] == "inconclusive"
    # a paper effect far above what we measure: the CI excludes it -> contradicted
    s["efficientnet_b0/clip/clean"] = _shift(0.72, [-0.01, 0.01, -0.005, 0.005, 0.0])
    old = dict(X.PAPER_EFFECTS)
    try:
        X.PAPER_EFFECTS["vlcd-beats-alone"] = 0.05
        assert X._claim_beats_alone({"profile": "cpu", "summary": s})[1] == "contradicted"
    finally:
        X.PAPER_EFFECTS.update(old)
    # an old record without the student-alone rows (or only some of them) is pending, never an error
    no_alone = {k: v for k, v in s.items() if "/clip/" not in k}
    ours, verdict, why = X._claim_beats_alone({"profile": "cpu", "summary": no_alone})
    assert verdict == "pending" and "re-run pending" in ours
    some = {k: v for k, v in s.items() if k != "efficientformer_l1/clip/clean"}
    assert X._claim_beats_alone({"profile": "cpu", "summary": some})[1] == "pending"


def test_claim_predistill_verdicts():
    rec = {"profile": "cpu", "summary": {"pre/phone": _e(0.65), "nopre/phone": _e(0.60), "pre/clean": _e(0.7),
                                         "nopre/clean": _e(0.7)}}
    assert X._claim_predistill(rec)[1] == "reproduced"
    assert "re-run pending" in X._claim_predistill(rec)[0]  # no student-alone row in this record
    rec["summary"]["clip/phone"] = _e(0.55)
    assert "re-run pending" not in X._claim_predistill(rec)[0]
    rec["summary"]["pre/phone"] = _e(0.55)
    assert X._claim_predistill(rec)[1] == "contradicted"
    rec["summary"]["pre/phone"] = _shift(0.60, [0.05, -0.04, 0.03, -0.05, 0.0])
    assert X._claim_predistill(rec)[1] == "inconclusive"
    rec["summary"] = {k: _e(v["mean"], n=3) for k, v in rec["summary"].items()}
    assert X._claim_predistill(rec)[1] == "pending"


def test_claim_lambda_verdicts():
    lam = {f"lam{l:g}/clean": _e(m) for l, m in [(0, 0.6), (0.01, 0.62), (0.1, 0.7), (1, 0.64), (10, 0.5)]}
    config = {"lams": [0.0, 0.01, 0.1, 1.0, 10.0]}
    assert X._claim_lambda({"profile": "cpu", "summary": lam, "config": config})[1] == "reproduced"
    lam["lam1/clean"] = _e(0.75)
    ours, verdict, why = X._claim_lambda({"profile": "cpu", "summary": lam, "config": config})
    assert verdict == "contradicted" and "lambda = 1" in why
    lam["lam1/clean"] = _shift(0.70, [0.05, -0.06, 0.04, -0.05, 0.01])
    ours, verdict, why = X._claim_lambda({"profile": "cpu", "summary": lam, "config": config})
    assert verdict == "inconclusive" and "flat" in why and "it has the best mean" in why
    lam["lam1/clean"] = _shift(0.70, [0.06, -0.05, 0.05, -0.04, 0.02])  # mean above lambda = 0.1's, within noise
    _, verdict, why = X._claim_lambda({"profile": "cpu", "summary": lam, "config": config})
    assert verdict == "inconclusive" and "the best mean is lambda = 1's" in why
    assert X._claim_lambda({"profile": "cpu", "summary": lam, "config": {"lams": [0.0, 1.0]}})[1] == "not testable here"
    three = {k: _e(v["mean"], n=3) for k, v in lam.items()}
    assert X._claim_lambda({"profile": "cpu", "summary": three, "config": config})[1] == "pending"


def test_committed_records_give_a_valid_verdict():
    from medvlp_lib.experiments import load
    from medvlp_lib.results import VERDICTS
    for result, fns in (("vlcd_students", (X._claim_match_teacher, X._claim_beats_alone)),
                        ("vlcd_predistill", (X._claim_predistill,)), ("vlcd_lambda", (X._claim_lambda,))):
        try:
            rec = load(result, "cpu")
        except FileNotFoundError:
            continue
        for fn in fns:
            ours, verdict, why = fn(rec)
            assert verdict in VERDICTS and ours and why


def test_claim_efficiency():
    def row(model, name, frac, speed, batch):
        return dict(model=model, timm_name=name, size=224, batch=batch, param_fraction_vs_teacher=frac,
                    speedup_vs_teacher=speed)
    rows = [row("ResNet-50 (teacher)", "resnet50", 1.0, 1.0, b) for b in (1, 32)]
    rows += [row("MobileNetV3-Large", "mobilenetv3_large_100", 0.18, s, b) for s, b in ((4.7, 1), (6.3, 32))]
    rec = {"rows": rows, "batches": [1, 32], "threads": 1, "loadavg_before": [1.0, 1.0, 1.0]}
    assert X._claim_efficiency(rec)[1] == "reproduced"
    rec["rows"] = rows + [row("EfficientFormer-L1", "efficientformer_l1", 0.48, s, b) for s, b in ((1.5, 1), (2.0, 32))]
    assert X._claim_efficiency(rec)[1] == "contradicted"
