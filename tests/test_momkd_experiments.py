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
SEEDS = (0, 1, 2, 3, 4)


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
                        "momkd_hard_max", "momkd_public_edges", "momkd_n_slots3", "cohort"}
    assert out["momkd_n_slots3"]["usage_active_pos"] <= 3


def test_runs_are_deterministic():
    cfg = _cfg("momkd_main", methods=("momkd", "abmil"))
    a, b = E.momkd_main(cfg, 1), E.momkd_main(cfg, 1)
    assert a["momkd"]["auc_folds"] == b["momkd"]["auc_folds"]
    assert a["abmil"]["ext_auc_folds"] == b["abmil"]["ext_auc_folds"]


# --------------------------------------------------------------------------------------------- evaluators
B = np.array([0.70, 0.72, 0.68, 0.74, 0.71])           # a baseline over the five cpu seeds
JIT = np.array([0.004, -0.004, 0.002, -0.002, 0.0])     # small seed-to-seed noise of a paired difference
WILD = np.array([0.15, -0.10, 0.08, -0.05, 0.02])       # large noise: the CI holds 0 and the paper's effect


def _e(values, seeds=SEEDS):
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)), "n": int(v.size), "values": [float(x) for x in v],
            "seeds": list(seeds)[:v.size]}


def _rec(summary, profile="cpu", **config):
    return {"summary": summary, "config": {"folds": 5, "n_slots": 8, "subtype_strength": 2.0, **config},
            "profile": profile}


# what a paired difference of a - b looks like for each verdict the protocol can reach
CASES = {"reproduced": 0.08 + JIT,        # CI above 0
         "contradicted": -0.08 + JIT,     # the opposite direction beyond noise
         "excludes_effect": JIT / 4,      # tight around 0: the CI excludes the paper's effect -> contradicted
         "inconclusive": 0.02 + WILD}     # CI holds both 0 and the paper's effect
VERDICT = {"reproduced": "reproduced", "contradicted": "contradicted", "excludes_effect": "contradicted",
           "inconclusive": "inconclusive"}


def _pair(a_key, b_key, case, base=B):
    return {a_key: _e(base + CASES[case]), b_key: _e(base)}


@pytest.mark.parametrize("case", list(CASES))
def test_claim_beats_every_verdict_on_the_subtype_cohort(case):
    s = {**_pair("subtype_momkd/auc", "subtype_wsi_only/auc", case),
         "subtype_abmil/auc": _e(B - 0.01), "subtype_meanpool/auc": _e(B - 0.05),
         # the label-only default cohort says the opposite: it must not decide
         "momkd/auc": _e(B - 0.1), "wsi_only/auc": _e(B), "abmil/auc": _e(B)}
    if case != "reproduced":  # the ABMIL comparison passes; the WSI-only one decides the verdict
        s["subtype_abmil/auc"] = _e(s["subtype_momkd/auc"]["values"] - np.asarray(0.08 + JIT))
    ours, verdict, why = E.CLAIMS["momkd-beats"](_rec(s))
    assert verdict == VERDICT[case], (case, why)
    assert "subtype cohort" in why and "label-only default cohort: MoMKD 61.0" in ours and "n=5 seeds" in ours
    if case == "reproduced":
        assert "MoMKD beats WSI-only by 8.0" in why


def test_claim_beats_on_a_record_without_the_subtype_cohort_uses_the_default_one():
    s = {**_pair("momkd/auc", "wsi_only/auc", "reproduced"), "abmil/auc": _e(B - 0.02), "meanpool/auc": _e(B)}
    ours, verdict, why = E.CLAIMS["momkd-beats"](_rec(s))
    assert verdict == "reproduced" and "default cohort" in why


def test_pending_below_five_seeds():
    s = {"momkd/auc": _e([0.80, 0.81, 0.82]), "wsi_only/auc": _e([0.70, 0.71, 0.72]),
         "abmil/auc": _e([0.72, 0.73, 0.71]), "meanpool/auc": _e([0.6, 0.6, 0.61])}
    ours, verdict, why = E.CLAIMS["momkd-beats"](_rec(s))
    assert verdict == "pending" and "at least 5" in why and "Caveat" not in why


@pytest.mark.parametrize("case", list(CASES))
def test_claim_shift_every_verdict(case):
    mo_in, mo_ex = B + 0.05, B + 0.02  # momentum drops 3 points
    fx_in = B + 0.05
    fx_ex = fx_in - 0.03 - CASES[case]  # the fixed memory's extra drop is the case's difference
    s = {"momkd/auc": _e(mo_in), "momkd/ext_auc": _e(mo_ex), "momkd_fixed_memory/auc": _e(fx_in),
         "momkd_fixed_memory/ext_auc": _e(fx_ex)}
    ours, verdict, why = E.CLAIMS["momkd-shift"](_rec(s))
    assert verdict == VERDICT[case], (case, why)
    assert "->" in ours


@pytest.mark.parametrize("case", list(CASES))
def test_claim_both_align_every_verdict(case):
    s = {**_pair("subtype_momkd/auc", "subtype_momkd_wsi_align_only/auc", case),
         "subtype_momkd_omics_align_only/auc": _e(B - 0.08),
         "momkd/auc": _e(B), "momkd_wsi_align_only/auc": _e(B), "momkd_omics_align_only/auc": _e(B)}
    if case != "reproduced":
        s["subtype_momkd_omics_align_only/auc"] = _e(s["subtype_momkd/auc"]["values"] - np.asarray(0.08 + JIT))
    ours, verdict, why = E.CLAIMS["momkd-both-align"](_rec(s))
    assert verdict == VERDICT[case], (case, why)
    assert "subtype cohort" in why and "label-only default cohort" in ours


@pytest.mark.parametrize("case", list(CASES))
def test_claim_variance_every_verdict(case):
    mo = np.array([0.015, 0.012, 0.018, 0.014, 0.016])
    # the paper's effect is 2 points of fold std: the cases' differences scaled by 1/4 stay on that scale
    s = {"subtype_momkd/auc_fold_std": _e(mo), "subtype_abmil/auc_fold_std": _e(mo + CASES[case] / 4),
         "subtype_wsi_only/auc_fold_std": _e(mo + 0.03 + JIT)}
    ours, verdict, why = E.CLAIMS["momkd-variance"](_rec(s))
    assert verdict == VERDICT[case], (case, why)
    assert "MoMKD 1.5 ± 0.2" in ours


@pytest.mark.parametrize("case", list(CASES))
def test_claim_no_recon_every_verdict(case):
    s = {**_pair("subtype_momkd/auc", "subtype_momkd_no_recon/auc", case), "momkd/auc": _e(B),
         "momkd_no_recon/auc": _e(B)}
    if case == "excludes_effect":  # the paper's effect is 1.6 points: the CI must sit below it
        s["subtype_momkd/auc"] = _e(B + JIT / 8)
    ours, verdict, why = E.CLAIMS["momkd-no-recon"](_rec(s))
    assert verdict == VERDICT[case], (case, why)
    empty = E.CLAIMS["momkd-no-recon"](_rec({"momkd/auc": _e(B)}))
    assert empty[1] == "pending"


@pytest.mark.parametrize("case,verdict", [("reproduced", "reproduced"), ("contradicted", "contradicted"),
                                          ("inconclusive", "inconclusive")])
def test_claim_slots_every_verdict(case, verdict):
    # no paper number: only the direction decides (a CI around 0 is inconclusive, never "excludes the effect")
    easy_neg, easy_pos = np.array([3, 3, 4, 3, 4.0]), np.array([3, 4, 3, 4, 3.0])
    delta = {"reproduced": 2 + 10 * JIT, "contradicted": -2 + 10 * JIT, "inconclusive": 10 * WILD}[case]
    u = {"momkd/usage_active_neg": _e(easy_neg), "momkd/usage_active_pos": _e(easy_pos),
         "hard_momkd/usage_active_neg": _e(easy_neg + delta), "hard_momkd/usage_active_pos": _e(easy_pos)}
    ours, got, why = E.CLAIMS["momkd-slots"](_rec(u))
    assert got == verdict, why
    assert "of 16" in ours
    assert E.CLAIMS["momkd-slots"](_rec({}))[1] == "pending"


def test_every_claim_states_the_paper_effect():
    assert all(0 < v < 0.1 for v in E.PAPER_EFFECTS.values())
    assert E.PAPER_EFFECTS["beats_wsi_only"] == pytest.approx(0.057)
    assert E.PAPER_EFFECTS["shift_extra_drop"] == pytest.approx(0.055)


@pytest.mark.parametrize("cid,name", [("momkd-beats", "momkd_main"), ("momkd-variance", "momkd_main"),
                                      ("momkd-slots", "momkd_main"), ("momkd-shift", "momkd_memory"),
                                      ("momkd-both-align", "momkd_ablations"), ("momkd-no-recon", "momkd_ablations")])
def test_committed_records_give_pending_or_a_verdict(cid, name):
    from medvlp_lib.experiments import load
    from medvlp_lib.results import VERDICTS

    try:
        rec = load(name, "cpu")
    except FileNotFoundError:
        pytest.skip(f"no committed results/{name}.json")
    ours, verdict, why = E.CLAIMS[cid](rec)
    assert verdict in VERDICTS and ours and why
    if rec["summary"]["momkd/auc"]["n"] < 5:
        assert verdict == "pending"


def test_edge_direction_effect_is_claim_free():
    s = _pair("momkd_public_edges/auc", "momkd/auc", "inconclusive")
    eff = E.edge_direction_effect(_rec(s))
    assert eff["n"] == 5 and eff["lo"] < eff["mean"] < eff["hi"] and eff["mean"] == pytest.approx(0.04)
    assert E.edge_direction_effect(_rec({"momkd/auc": _e(B)})) is None
    assert not any("edge" in cid for cid in E.CLAIMS)


def test_claim_ids_match_ledger_rows():
    from medvlp_lib.ledger import CLAIMS as ROWS

    rows = {c.id: c for c in ROWS}
    for cid in E.CLAIMS:
        assert cid in rows and rows[cid].chapter == "05"
    assert rows["momkd-beats"].result == "momkd_main" and rows["momkd-shift"].result == "momkd_memory"
    assert rows["momkd-both-align"].result == "momkd_ablations" and rows["momkd-variance"].result == "momkd_main"


def test_chance_caveat_only_when_nothing_learned():
    chance = np.array([0.49, 0.51, 0.50, 0.52, 0.48])
    s = {"momkd/auc": _e(chance + JIT), "wsi_only/auc": _e(chance), "abmil/auc": _e(chance - JIT),
         "meanpool/auc": _e(chance)}
    why = E.CLAIMS["momkd-beats"](_rec(s))[2]
    assert "Caveat" in why and "not shown at this scale" in why
    learned = dict(s, **{"abmil/auc": _e(B + 0.1)})
    assert "Caveat" not in E.CLAIMS["momkd-beats"](_rec(learned))[2]


def test_main_cohorts_keys_and_slot_usage():
    cfg = _cfg("momkd_main", methods=("momkd", "abmil"), hard_signal_strength=0.5,
               cohorts=("default", "hard", "subtype"))
    out = E.momkd_main(cfg, 0)
    assert {"momkd", "abmil", "hard_momkd", "hard_abmil", "hard_cohort", "subtype_momkd", "subtype_cohort"} <= set(out)
    assert 1 <= out["hard_momkd"]["usage_active_pos"] <= 2 and "usage_active_pos" in out["momkd"]
    assert out["subtype_cohort"]["subtype_strength"] == cfg.subtype_strength and out["cohort"]["subtype_strength"] == 0
    assert out["hard_cohort"]["signal_strength"] == 0.5
    # the subtype cohort has the default cohort's cases and labels; its patch features differ
    assert out["subtype_cohort"]["positives"] == out["cohort"]["positives"]
    assert out["subtype_momkd"]["auc_folds"] != out["momkd"]["auc_folds"] or \
        out["subtype_abmil"]["auc_folds"] != out["abmil"]["auc_folds"]


def test_cohort_settings_are_checked():
    with pytest.raises(ValueError, match="hard_signal_strength is None"):
        _cfg("momkd_main", cohorts=("default", "hard"), hard_signal_strength=None)
    with pytest.raises(ValueError, match="simulated"):
        get("momkd_main").config("gpu", {"cohorts": ("default", "subtype")})
    with pytest.raises(ValueError, match="data='real'"):
        _cfg("momkd_main", clam_root="/nowhere")
    assert [v.key for v in get("momkd_ablations").config("cpu").methods][-1] == "momkd_public_edges"
    for name in ("momkd_main", "momkd_memory", "momkd_ablations"):
        assert get(name).seeds["cpu"] == SEEDS


def test_public_edges_variant_builds_the_reversed_graph():
    cfg = _cfg("momkd_ablations")
    m = E.build_method(E.PUBLIC_EDGES, 16, 16, cfg, 0)
    assert m.edge_direction == "public_code" and E.build_method("momkd", 16, 16, cfg, 0).edge_direction == "gather"


def test_main_runs_on_clam_feature_files(tmp_path):
    """The same experiment code reads real CLAM-layout folders (here: a simulated cohort written to disk)."""
    from medvlp_lib.data.real.clam_features import write_clam

    cfg = _cfg("momkd_main", methods=("momkd", "abmil"))
    internal, external = E.make_cohorts(cfg, 0)
    write_clam(internal, tmp_path / "int")
    write_clam(external, tmp_path / "ext")
    real = cfg.replace(data="real", clam_root=str(tmp_path / "int"), clam_external_root=str(tmp_path / "ext"))
    out = E.momkd_main(real, 0)
    assert {"momkd", "abmil", "cohort"} <= set(out) and "hard_momkd" not in out
    assert out["cohort"]["n_cases"] == 12 and out["cohort"]["external_slides"] == len(external)
    for m in ("momkd", "abmil"):
        assert 0 <= out[m]["auc"] <= 1 and 0 <= out[m]["ext_auc"] <= 1
    only = E.momkd_main(real.replace(methods=("abmil",), clam_external_root=str(tmp_path / "none")), 0)
    assert only["abmil"]["ext_auc_folds"] == [] and "ext_auc" not in only["abmil"]
