"""Chapter 05 experiments: the MoMKD cross-validation runs on a tiny cohort produce the metric keys the
ledger evaluators read, and the evaluators give the right verdicts on hand-made records."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medvlp_lib.config import Variant
from medvlp_lib.eval import attention_quality
from medvlp_lib.experiments import _summarise, get
from medvlp_lib.experiments import momkd as E

torch.set_num_threads(1)

TINY = dict(n_cases=12, external_cases=8, n_patches=(20, 40), feature_dim=16, n_genes=16, n_modules=4, hidden_dim=16,
            shared_dim=8, n_slots=2, epochs=1, folds=2)


def _cfg(name: str, **extra):
    return get(name).config("fast", {**TINY, **extra})


def test_profiles_registered_and_consistent():
    for name in ("momkd_main", "momkd_memory", "momkd_ablations"):
        exp = get(name)
        assert set(exp.profiles) == {"fast", "cpu", "gpu"}
        for prof in ("fast", "cpu", "gpu"):
            cfg = exp.config(prof)
            assert cfg.folds >= 2 and cfg.epochs >= 1 and cfg.n_cases >= 2 * cfg.folds
            for m in cfg.methods:  # every method builds
                E.build_method(m, 8, 6, cfg.replace(hidden_dim=8, shared_dim=4, n_slots=2), 0)
    assert [v.key for v in get("momkd_main").config("cpu").methods] == ["momkd", "wsi_only", "abmil", "meanpool"]


def test_build_method_rejects_unknown():
    cfg = _cfg("momkd_main")
    with pytest.raises(ValueError, match="unknown method 'transmil'"):
        E.build_method("transmil", 8, 6, cfg, 0)
    with pytest.raises(ValueError, match="unknown method 'momkd:no_recon'"):  # no name mini-language
        E.build_method("momkd:no_recon", 8, 6, cfg, 0)
    with pytest.raises(ValueError, match="unknown MoMKD variant 'no_recn'"):
        E.build_method(Variant("momkd", {"variant": "no_recn"}), 8, 6, cfg, 0)
    with pytest.raises(ValueError, match="unknown key 'n_slot'.*did you mean 'n_slots'"):
        E.build_method(Variant("momkd", {"n_slot": 4}), 8, 6, cfg, 0)
    with pytest.raises(ValueError, match="unknown method"):  # checked when the configuration is made
        cfg.replace(methods=("momkd", "transmil"))


def test_variants_replace_the_name_mini_language():
    """``Variant("momkd", {"n_slots": 4})`` is what ``"momkd:n_slots=4"`` was, filed under the same result key."""
    cfg = _cfg("momkd_ablations")
    v = Variant("momkd", {"n_slots": 4})
    assert v.key == "momkd_n_slots4" and E.build_method(v, 16, 16, cfg, 0).memory.n_slots == 4
    assert E.preset("no_recon") == Variant("momkd", {"variant": "no_recon"}, "momkd_no_recon")
    assert not E.build_method(E.preset("no_recon"), 16, 16, cfg, 0).recon
    assert [v.key for v in get("momkd_memory").config("cpu").methods] == ["momkd", "momkd_fixed_memory",
                                                                           "momkd_learned_memory"]
    # a method given by name, as a (name, overrides) pair or as its recorded dict is the same Variant
    same = cfg.replace(methods=("abmil", ("momkd", {"n_slots": 4}),
                                {"name": "momkd", "overrides": {"variant": "no_recon"}, "key": "momkd_no_recon"}))
    assert same.methods == (Variant("abmil"), v, E.preset("no_recon"))
    assert type(cfg).from_dict(same.to_dict()) == same


def test_attention_quality_on_hand_made_scores():
    m = np.array([0, 0, 1, 1, 0], bool)
    perfect = attention_quality([np.array([0.1, 0.2, 0.9, 0.8, 0.0])], [m])
    assert perfect["auroc"] == 1.0 and perfect["p_at_k"] == 1.0
    worst = attention_quality([np.array([0.9, 0.8, 0.0, 0.1, 0.7])], [m])
    assert worst["auroc"] == 0.0 and worst["p_at_k"] == 0.0
    # slides without signal patches (negatives) and models without scores are skipped
    none = attention_quality([None, np.zeros(3)], [m, np.zeros(3, bool)])
    assert math.isnan(none["auroc"]) and math.isnan(none["p_at_k"])


def test_main_runs_on_tiny_cohort_with_ledger_keys():
    out = E.momkd_main(_cfg("momkd_main"), 0)
    assert set(out) == {"momkd", "wsi_only", "abmil", "meanpool", "cohort"}
    for m in ("momkd", "wsi_only", "abmil", "meanpool"):
        e = out[m]
        assert len(e["auc_folds"]) == 2 and len(e["ext_auc_folds"]) == 2
        for k in ("auc", "auc_fold_std", "ext_auc", "ext_auc_fold_std"):
            assert 0.0 <= e[k] <= 1.0, (m, k, e[k])
        assert e["cpu_seconds"] > 0
    for m in ("momkd", "wsi_only", "abmil"):  # models with patch scores are scored against the ground truth
        assert 0.0 <= out[m]["attn_auroc"] <= 1.0 and 0.0 <= out[m]["attn_p_at_k"] <= 1.0
    assert "attn_auroc" not in out["meanpool"]  # uniform attention has no scores
    assert out["cohort"]["n_cases"] == 12
    # the keys the evaluators read exist once the runner summarises seeds
    s = _summarise({0: out, 1: out})
    for k in ("momkd/auc", "wsi_only/auc", "abmil/auc", "meanpool/auc", "momkd/auc_fold_std",
              "abmil/auc_fold_std", "wsi_only/auc_fold_std"):
        assert k in s and s[k]["n"] == 2


def test_memory_and_ablation_keys():
    out = E.momkd_memory(_cfg("momkd_memory"), 0)
    assert set(out) == {"momkd", "momkd_fixed_memory", "momkd_learned_memory", "cohort"}
    for m in ("momkd", "momkd_fixed_memory", "momkd_learned_memory"):
        assert {"auc", "ext_auc", "usage_active_pos", "usage_perplexity_neg"} <= set(out[m])
        assert 1 <= out[m]["usage_active_pos"] <= 2
    out = E.momkd_ablations(_cfg("momkd_ablations", slot_sizes=(3,)), 0)
    assert set(out) == {"momkd", "momkd_wsi_align_only", "momkd_omics_align_only", "momkd_no_recon",
                        "momkd_hard_max", "momkd_n_slots3", "cohort"}
    assert out["momkd_n_slots3"]["usage_active_pos"] <= 3


def test_runs_are_deterministic():
    cfg = _cfg("momkd_main", methods=("momkd", "abmil"))
    a, b = E.momkd_main(cfg, 1), E.momkd_main(cfg, 1)
    assert a["momkd"]["auc_folds"] == b["momkd"]["auc_folds"]
    assert a["abmil"]["ext_auc_folds"] == b["abmil"]["ext_auc_folds"]


# --------------------------------------------------------------------------------------------- evaluators
def _e(values):
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)), "n": int(v.size), "values": [float(x) for x in v]}


def _rec(summary, profile="cpu"):
    return {"summary": summary, "config": {"folds": 5}, "profile": profile}


def test_claim_beats():
    good = _rec({"momkd/auc": _e([0.80, 0.81, 0.82]), "wsi_only/auc": _e([0.70, 0.71, 0.72]),
                 "abmil/auc": _e([0.72, 0.73, 0.71]), "meanpool/auc": _e([0.6, 0.6, 0.61])})
    ours, verdict, why = E.CLAIMS["momkd-beats"](good)
    assert verdict == "reproduced" and "MoMKD 81.0 ± 1.0" in ours and "n=3 seeds" in ours and "cpu" in ours
    bad = _rec({**good["summary"], "abmil/auc": _e([0.83, 0.84, 0.85])})  # ABMIL better
    assert E.CLAIMS["momkd-beats"](bad)[1] == "not reproduced"
    noisy = _rec({**good["summary"], "momkd/auc": _e([0.60, 0.95, 0.90])})  # right sign, within noise
    assert E.CLAIMS["momkd-beats"](noisy)[1] == "not reproduced"


def test_claim_shift():
    s = {"momkd/auc": _e([0.82, 0.83, 0.81]), "momkd/ext_auc": _e([0.80, 0.79, 0.80]),
         "momkd_fixed_memory/auc": _e([0.82, 0.81, 0.83]), "momkd_fixed_memory/ext_auc": _e([0.70, 0.71, 0.72])}
    ours, verdict, why = E.CLAIMS["momkd-shift"](_rec(s))
    assert verdict == "reproduced" and "->" in ours
    same = dict(s, **{"momkd_fixed_memory/ext_auc": _e([0.80, 0.79, 0.80])})
    assert E.CLAIMS["momkd-shift"](_rec(same))[1] == "not reproduced"
    reverse = dict(s, **{"momkd/ext_auc": _e([0.70, 0.71, 0.72]), "momkd_fixed_memory/ext_auc": _e([0.80, 0.79, 0.80])})
    assert E.CLAIMS["momkd-shift"](_rec(reverse))[1] == "not reproduced"


def test_claim_both_align():
    s = {"momkd/auc": _e([0.80, 0.81, 0.79]), "momkd_wsi_align_only/auc": _e([0.75, 0.74, 0.76]),
         "momkd_omics_align_only/auc": _e([0.75, 0.76, 0.74])}
    assert E.CLAIMS["momkd-both-align"](_rec(s))[1] == "reproduced"
    one = dict(s, **{"momkd_omics_align_only/auc": _e([0.80, 0.81, 0.79])})  # omics-only as good as both
    assert E.CLAIMS["momkd-both-align"](_rec(one))[1] == "not reproduced"


def test_claim_variance():
    s = {"momkd/auc_fold_std": _e([0.01, 0.012, 0.011]), "abmil/auc_fold_std": _e([0.05, 0.04, 0.045]),
         "wsi_only/auc_fold_std": _e([0.04, 0.05, 0.045])}
    ours, verdict, _ = E.CLAIMS["momkd-variance"](_rec(s))
    assert verdict == "reproduced" and "MoMKD 1.1 ± 0.1" in ours
    worse = dict(s, **{"momkd/auc_fold_std": _e([0.06, 0.07, 0.065])})
    assert E.CLAIMS["momkd-variance"](_rec(worse))[1] == "not reproduced"


def test_claim_ids_match_ledger_rows():
    from medvlp_lib.ledger import CLAIMS as ROWS

    rows = {c.id: c for c in ROWS}
    for cid in E.CLAIMS:
        assert cid in rows and rows[cid].chapter == "05"
    assert rows["momkd-beats"].result == "momkd_main" and rows["momkd-shift"].result == "momkd_memory"
    assert rows["momkd-both-align"].result == "momkd_ablations" and rows["momkd-variance"].result == "momkd_main"


def test_chance_caveat_only_when_nothing_learned():
    s = {"momkd/auc": _e([0.45, 0.55, 0.52]), "wsi_only/auc": _e([0.48, 0.51, 0.50]),
         "abmil/auc": _e([0.50, 0.53, 0.49]), "meanpool/auc": _e([0.5, 0.52, 0.47])}
    why = E.CLAIMS["momkd-beats"](_rec(s))[2]
    assert "Caveat" in why and "not shown at this scale" in why
    learned = dict(s, **{"abmil/auc": _e([0.80, 0.82, 0.79])})
    assert "Caveat" not in E.CLAIMS["momkd-beats"](_rec(learned))[2]


def test_main_hard_cohort_keys_and_slot_usage():
    out = E.momkd_main(_cfg("momkd_main", methods=("momkd", "abmil"), hard_signal_strength=0.5), 0)
    assert {"momkd", "abmil", "hard_momkd", "hard_abmil", "hard_cohort"} <= set(out)
    assert 1 <= out["hard_momkd"]["usage_active_pos"] <= 2 and "usage_active_pos" in out["momkd"]
    # a weaker signal is a different cohort: same cases and layout, different patch features
    assert out["hard_momkd"]["auc_folds"] != out["momkd"]["auc_folds"] or \
        out["hard_abmil"]["auc_folds"] != out["abmil"]["auc_folds"]


def test_beats_and_variance_are_judged_on_the_hard_cohort_when_present():
    easy = {"momkd/auc": _e([0.80, 0.81, 0.82]), "wsi_only/auc": _e([0.70, 0.71, 0.72]),
            "abmil/auc": _e([0.72, 0.73, 0.71]), "meanpool/auc": _e([0.6, 0.6, 0.61])}
    hard = {f"hard_{k}": v for k, v in easy.items()}
    hard["hard_momkd/auc"] = _e([0.60, 0.61, 0.62])  # MoMKD loses on the hard cohort
    rec = {"summary": {**easy, **hard}, "profile": "cpu",
           "config": {"folds": 5, "signal_strength": 2.0, "hard_signal_strength": 1.5}}
    ours, verdict, why = E.CLAIMS["momkd-beats"](rec)
    assert verdict == "not reproduced" and "hard cohort" in why and "default cohort: MoMKD 81.0" in ours
    rec["summary"]["hard_momkd/auc"] = _e([0.80, 0.81, 0.82])
    assert E.CLAIMS["momkd-beats"](rec)[1] == "reproduced"
    std = {"momkd/auc_fold_std": _e([0.01, 0.012, 0.011]), "abmil/auc_fold_std": _e([0.05, 0.04, 0.045]),
           "wsi_only/auc_fold_std": _e([0.04, 0.05, 0.045])}
    rec["summary"].update(std)
    rec["summary"].update({f"hard_{k}": _e([0.06, 0.07, 0.065]) if k.startswith("momkd") else v
                           for k, v in std.items()})
    assert E.CLAIMS["momkd-variance"](rec)[1] == "not reproduced"  # hard cohort decides, not the easy one


def test_claim_no_recon_and_slots():
    s = {"momkd/auc": _e([0.80, 0.81, 0.79]), "momkd_no_recon/auc": _e([0.75, 0.74, 0.76])}
    assert E.CLAIMS["momkd-no-recon"](_rec(s))[1] == "reproduced"
    s["momkd_no_recon/auc"] = _e([0.80, 0.79, 0.81])
    assert E.CLAIMS["momkd-no-recon"](_rec(s))[1] == "not reproduced"
    u = {"momkd/usage_active_neg": _e([3, 3, 4]), "momkd/usage_active_pos": _e([3, 4, 3]),
         "hard_momkd/usage_active_neg": _e([6, 7, 6]), "hard_momkd/usage_active_pos": _e([6, 6, 7])}
    rec = {"summary": u, "profile": "cpu", "config": {"folds": 5, "n_slots": 8}}
    ours, verdict, _ = E.CLAIMS["momkd-slots"](rec)
    assert verdict == "reproduced" and "of 16" in ours and "hard cohort 12.7" in ours
    rec["summary"] = {**u, "hard_momkd/usage_active_neg": _e([3, 4, 3]), "hard_momkd/usage_active_pos": _e([3, 3, 4])}
    assert E.CLAIMS["momkd-slots"](rec)[1] == "not reproduced"
    empty = {"summary": {}, "profile": "cpu", "config": {"folds": 5, "n_slots": 8}}
    assert E.CLAIMS["momkd-slots"](empty)[1] == "pending"


def test_main_runs_on_clam_feature_files(tmp_path):
    """The same experiment code reads real CLAM-layout folders (here: a simulated cohort written to disk)."""
    from medvlp_lib.data.real.clam_features import write_clam

    cfg = _cfg("momkd_main", methods=("momkd", "abmil"), hard_signal_strength=0.5)
    internal, external = E.make_cohorts(cfg, 0)
    write_clam(internal, tmp_path / "int")
    write_clam(external, tmp_path / "ext")
    out = E.momkd_main(cfg.replace(clam_root=str(tmp_path / "int"), clam_external_root=str(tmp_path / "ext")), 0)
    assert {"momkd", "abmil", "cohort"} <= set(out) and "hard_momkd" not in out  # no hard cohort for real data
    assert out["cohort"]["n_cases"] == 12 and out["cohort"]["external_slides"] == len(external)
    for m in ("momkd", "abmil"):
        assert 0 <= out[m]["auc"] <= 1 and 0 <= out[m]["ext_auc"] <= 1
    only = E.momkd_main(cfg.replace(methods=("abmil",), clam_root=str(tmp_path / "int")), 0)  # no external folder
    assert only["abmil"]["ext_auc_folds"] == [] and "ext_auc" not in only["abmil"]
