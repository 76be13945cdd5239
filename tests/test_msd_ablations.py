"""Tests for chapter 03's ablation experiments (medvlp_lib.experiments.msd): grids, tiny runs, claim verdicts."""
from __future__ import annotations

import numpy as np

from medvlp_lib import experiments
from medvlp_lib.experiments import msd as exp_msd
from medvlp_lib.ledger import CLAIMS as LEDGER_CLAIMS

ABLATIONS = ("msd_alpha_beta", "msd_loss_weights", "msd_momentum_queue", "msd_batch_size")
TINY = {"n_train": 64, "n_test": 48, "probe_fractions": (0.5, 1.0)}




def test_registered_on_top_of_chapter_02_config():
    base = experiments.get("msd_vs_baselines")
    for name in ABLATIONS:
        exp = experiments.get(name)
        assert set(exp.profiles) == {"fast", "cpu", "gpu"}
        for p in ("fast", "cpu", "gpu"):
            cfg, ref = exp.config(p), base.config(p)
            for key in ("image_encoder", "image_size", "n_train", "epochs", "batch_size", "alpha", "beta", "w_uni",
                        "w_multi", "momentum", "queue_size", "lr"):
                assert getattr(cfg, key) == getattr(ref, key), (name, p, key)
    cpu = {n: experiments.get(n).config("cpu") for n in ABLATIONS}
    assert cpu["msd_alpha_beta"].alpha_betas == ((1, 0), (0.7, 0.3), (0.5, 0.5), (0.3, 0.7), (0, 1))
    assert cpu["msd_loss_weights"].w_multis == (1, 5, 10, 20)
    assert cpu["msd_batch_size"].effective_batches == (16, 64, 256, 512)


def test_variant_keys():
    assert exp_msd.variant_key("ab", (0.3, 0.7)) == "ab_0.3_0.7"
    assert exp_msd.variant_key("ab", (1.0, 0.0)) == "ab_1_0"
    assert exp_msd.variant_key("w", 10.0) == "w_10"
    assert exp_msd.variant_key("m", 0.995) == "m_0.995"


def test_alpha_one_gives_exactly_zero_multimodal_loss():
    """The mechanism behind "alpha = 1 fails": the target equals the (stop-gradient) prediction, so KL = 0."""
    rec = experiments.run("msd_alpha_beta", "fast", seeds=[0], write=False, verbose=False,
                          overrides={**TINY, "alpha_betas": ((1.0, 0.0), (0.0, 1.0))})
    per = rec["per_seed"]["0"]
    assert set(per) == {"ab_1_0", "ab_0_1"}
    assert np.allclose(per["ab_1_0"]["curves"]["loss_multi"], 0.0, atol=1e-6)
    assert min(per["ab_0_1"]["curves"]["loss_multi"]) > 1e-3
    assert per["ab_1_0"]["steps"] == per["ab_0_1"]["steps"] == 4
    assert "ab_1_0/zero_shot_auc" in rec["summary"]


def test_loss_weights_and_batch_size_runs():
    rec = experiments.run("msd_loss_weights", "fast", seeds=[0], write=False, verbose=False,
                          overrides={**TINY, "w_multis": (1.0, 10.0)})
    per = rec["per_seed"]["0"]
    # with w_multi = 10 the uni-modal share of the weighted loss is smaller than with w_multi = 1
    assert np.mean(per["w_10"]["curves"]["uni_share"]) < np.mean(per["w_1"]["curves"]["uni_share"])
    rec = experiments.run("msd_batch_size", "fast", seeds=[0], write=False, verbose=False,
                          overrides={**TINY, "effective_batches": (16, 32), "sub_batch": 16})
    per = rec["per_seed"]["0"]
    assert per["b_16"]["steps"] == 4 and per["b_32"]["steps"] == 2  # equal epochs: fewer, larger steps


def test_momentum_queue_variants():
    cfg = experiments.get("msd_momentum_queue").config("cpu")
    rec = experiments.run("msd_momentum_queue", "fast", seeds=[0], write=False, verbose=False,
                          overrides={**TINY, "momenta": (0.9,), "queue_sizes": (32,)})
    assert set(rec["per_seed"]["0"]) == {"m_0.9", "q_32"}
    assert cfg.momentum in cfg.momenta  # the default run is one of the m variants


def _entry(values):
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0, "n": int(a.size)}


def _ab_record(aucs: dict):
    return {"profile": "cpu", "config": {"alpha_betas": [list(k) for k in aucs]},
            "summary": {f"{exp_msd.variant_key('ab', k)}/zero_shot_auc": _entry(v) for k, v in aucs.items()}}


def test_claim_alpha1_fails_verdicts():
    fn = exp_msd.CLAIMS["msd-alpha1-fails"]
    ours, verdict, why = fn(_ab_record({(1.0, 0.0): [0.50, 0.51, 0.49], (0.0, 1.0): [0.70, 0.72, 0.71]}))
    assert verdict == "reproduced" and "n=3" in ours and "zero" in why
    _, verdict, why = fn(_ab_record({(1.0, 0.0): [0.60, 0.70, 0.50], (0.0, 1.0): [0.61, 0.55, 0.66]}))
    assert verdict == "not reproduced" and "seed noise" in why


def test_claim_best_ab_verdicts():
    fn = exp_msd.CLAIMS["msd-best-ab"]
    base = {(1.0, 0.0): [0.5] * 3, (0.7, 0.3): [0.60, 0.61, 0.62], (0.5, 0.5): [0.62, 0.63, 0.64],
            (0.0, 1.0): [0.64, 0.65, 0.66]}
    _, verdict, why = fn(_ab_record({**base, (0.3, 0.7): [0.75, 0.76, 0.77]}))
    assert verdict == "reproduced" and "(0, 1)" in why
    _, verdict, why = fn(_ab_record({**base, (0.3, 0.7): [0.60, 0.72, 0.66]}))
    assert verdict == "not reproduced" and "within seed noise" in why  # first, but not separated
    _, verdict, why = fn(_ab_record({**base, (0.3, 0.7): [0.55, 0.56, 0.57]}))
    assert verdict == "not reproduced" and "(0, 1) ranks first" in why


def test_claim_wmulti_verdicts():
    fn = exp_msd.CLAIMS["msd-wmulti"]
    rec = lambda w10, w1: {"profile": "cpu", "summary": {"w_10/zero_shot_auc": _entry(w10),  # noqa: E731
                                                         "w_1/zero_shot_auc": _entry(w1)}}
    assert fn(rec([0.70, 0.71, 0.72], [0.60, 0.61, 0.62]))[1] == "reproduced"
    _, verdict, why = fn(rec([0.60, 0.61, 0.62], [0.70, 0.71, 0.72]))
    assert verdict == "not reproduced" and "other way" in why
    _, verdict, why = fn(rec([0.60, 0.70, 0.65], [0.62, 0.66, 0.64]))
    assert verdict == "not reproduced" and "seed noise" in why


def test_ledger_rows_point_at_the_ablation_results():
    rows = {c.id: c for c in LEDGER_CLAIMS}
    assert rows["msd-alpha1-fails"].result == rows["msd-best-ab"].result == "msd_alpha_beta"
    assert rows["msd-wmulti"].result == "msd_loss_weights"
