"""The one verdict helper (medvlp_lib.results): each comparison kind and outcome on constructed summary entries,
and every ledger claim declared once, next to its evaluator."""
from __future__ import annotations

import pytest

from medvlp_lib import experiments, ledger
from medvlp_lib.results import ONE_SEED, Comparison, Wording, claim_verdict, judge, judge_claim, summary_entry

SEEDS = [0, 1, 2, 3, 4]
HI = summary_entry([0.80, 0.81, 0.82, 0.805, 0.815], seeds=SEEDS)
MID = summary_entry([0.70, 0.71, 0.72, 0.705, 0.715], seeds=SEEDS)          # HI - MID = 0.10 on every seed
NEAR = summary_entry([0.79, 0.815, 0.80, 0.81, 0.80], seeds=SEEDS)         # within noise of HI
WIDE = summary_entry([0.95, 0.65, 0.90, 0.70, 0.82], seeds=SEEDS)          # HI +- 0.15: a wide interval
FEW = summary_entry([0.90, 0.91, 0.92], seeds=[0, 1, 2])                    # fewer than MIN_SEEDS
FEW_B = summary_entry([0.70, 0.71, 0.72], seeds=[0, 1, 2])
WORDS = Wording(reproduced="yes {d:.1f} ({se:.1f})", not_reproduced="no {d:+.1f}", opposed="other way {neg:.1f}")


def test_superiority_each_verdict():
    j = judge(Comparison(HI, MID, paper_effect=0.10))
    assert j.supports and not j.opposes and j.diff == pytest.approx(0.10) and j.estimate.n == 5
    assert claim_verdict([j]) == "reproduced"
    j = judge(Comparison(MID, HI, paper_effect=0.05))
    assert not j.supports and j.opposes and claim_verdict([j]) == "contradicted"     # the other way
    j = judge(Comparison(NEAR, HI, paper_effect=0.10))                              # ~0, CI excludes 0.10
    assert claim_verdict([j]) == "contradicted" and not j.opposes
    j = judge(Comparison(WIDE, HI, paper_effect=0.05))                              # holds 0 and 0.05
    assert claim_verdict([j]) == "inconclusive" and j.estimate.mde > 0.05
    assert claim_verdict([judge(Comparison(FEW, FEW_B, paper_effect=0.1))]) == "pending"
    assert judge(Comparison(MID, HI, higher_is_better=False, paper_effect=0.1)).supports   # lower is better


def test_non_inferiority_and_its_margin():
    assert judge(Comparison(NEAR, HI, kind="non-inferiority", margin=0.02)).supports  # CI above -0.02
    assert claim_verdict([judge(Comparison(HI, MID, kind="non-inferiority", margin=0.02))]) == "reproduced"
    j = judge(Comparison(MID, HI, kind="non-inferiority", margin=0.02))
    assert j.opposes and not j.supports and claim_verdict([j]) == "contradicted"     # worse beyond the margin
    # a margin of 0.15 tolerates the 0.10 gap; one of 0.05 does not
    assert judge(Comparison(MID, HI, kind="non-inferiority", margin=0.15)).supports
    assert judge(Comparison(MID, HI, kind="non-inferiority", margin=0.05)).opposes
    # "not worse beyond noise" is never reproduced: a wide interval that holds -margin stays inconclusive
    assert claim_verdict([judge(Comparison(WIDE, HI, kind="non-inferiority", margin=0.02))]) == "inconclusive"
    assert claim_verdict([judge(Comparison(FEW, FEW_B, kind="non-inferiority", margin=0.02))]) == "pending"
    with pytest.raises(ValueError, match="kind"):
        Comparison(HI, MID, kind="equivalence")
    with pytest.raises(ValueError, match="no margin"):
        Comparison(HI, MID, margin=0.1)
    with pytest.raises(ValueError, match="needs margin"):
        Comparison(HI, MID, kind="non-inferiority")
    with pytest.raises(ValueError, match="paper_effect"):
        Comparison(HI, MID, paper_effect=-0.1)
    with pytest.raises(ValueError, match="at least one comparison"):
        claim_verdict([])


def test_a_claim_with_two_comparisons_needs_both():
    both = [judge(Comparison(HI, MID, paper_effect=0.1)), judge(Comparison(HI, MID, paper_effect=0.1))]
    one = [judge(Comparison(HI, MID, paper_effect=0.1)), judge(Comparison(WIDE, HI, paper_effect=0.05))]
    worse = [judge(Comparison(HI, MID, paper_effect=0.1)), judge(Comparison(MID, HI, paper_effect=0.1))]
    assert claim_verdict(both) == "reproduced" and claim_verdict(one) == "inconclusive"
    assert claim_verdict(worse) == "contradicted"


def test_paired_uses_the_seeds_not_the_order():
    a = summary_entry([0.8, 0.9, 0.7, 0.85, 0.75], seeds=[4, 3, 2, 1, 0])
    b = summary_entry([0.75, 0.65, 0.85, 0.7, 0.8], seeds=[0, 1, 2, 3, 4])
    j = judge(Comparison(a, b, paper_effect=0.05))
    # per seed: 0: .75-.75, 1: .85-.65, 2: .7-.85, 3: .9-.7, 4: .8-.8
    assert j.diff == pytest.approx((0 + 0.2 - 0.15 + 0.2 + 0) / 5)


def test_judge_claim_words_each_verdict():
    summary = {"a/auc": HI, "b/auc": MID, "c/auc": NEAR, "w/auc": WIDE}
    ours, verdict, text = judge_claim("ours", [Comparison("a/auc", "b/auc", paper_effect=0.1)], WORDS, summary)
    assert (ours, verdict) == ("ours", "reproduced") and text.startswith("yes 10.0 (0.")
    assert "[reproduced:" in text                                                    # the protocol's reason
    assert judge_claim("o", [Comparison("w/auc", "a/auc", paper_effect=0.05)], WORDS, summary)[1] == "inconclusive"
    assert judge_claim("o", [Comparison("b/auc", "a/auc", paper_effect=0.1)], WORDS, summary)[2].startswith(
        "other way 10.0")
    words = Wording(reproduced="{d1:.0f}+{d2:.0f} {note}", not_reproduced="-", scale=1000)
    res = judge_claim("o", [Comparison(HI, MID, paper_effect=0.1), Comparison(HI, MID, kind="non-inferiority",
                                                                              margin=0.01)], words, note="n")
    assert res[2].startswith("100+100 n") and len(res.judgements) == 2
    assert judge_claim("o", [Comparison(FEW, FEW_B, kind="non-inferiority", margin=0.02)], WORDS)[1:] == (
        "pending", ONE_SEED)
    with pytest.raises(ValueError, match="only one of the two runs"):          # unpaired seeds are a design error
        judge(Comparison(FEW, MID, paper_effect=0.1))
    with pytest.raises(KeyError, match="no entry 'd/auc'"):
        judge_claim("o", [Comparison("d/auc", "a/auc")], WORDS, summary)


def test_every_claim_is_declared_once_next_to_its_evaluator():
    ids = [c.id for c in ledger.CLAIMS]
    assert len(ids) == len(set(ids)) == 26  # 22 paper claims + chapter 10's 4 compositions
    assert [c.chapter for c in ledger.CLAIMS] == sorted(c.chapter for c in ledger.CLAIMS)  # chapter order
    evaluators = experiments.claim_evaluators()
    for c in ledger.CLAIMS:
        assert c.result and callable(c.evaluate) and evaluators[c.id] is c.evaluate
        module = experiments.claims_of(c.evaluate.__module__)
        assert module[c.id] is c.evaluate  # the chapter module's CLAIMS dict holds it


def test_reason_in_points_scales_every_number():
    """The protocol's reason reads in the unit of the explanation around it (fractions x 100 = points, one decimal
    like the tables; unscaled, four significant digits)."""
    from medvlp_lib.results import Comparison, judge
    a = {"values": [0.80, 0.82, 0.79, 0.81, 0.80], "seeds": [0, 1, 2, 3, 4]}
    b = {"values": [0.79, 0.80, 0.80, 0.80, 0.79], "seeds": [0, 1, 2, 3, 4]}
    j = judge(Comparison(a, b, kind="non-inferiority", margin=0.02))
    assert j.reason.endswith("lower bound -0.002444 is above the margin -0.02 (n = 5)")
    assert j.reason_in(100).endswith("lower bound -0.2 is above the margin -2.0 (n = 5)")
    assert j.reason_in(1.0) == j.reason
    j = judge(Comparison(a, b, paper_effect=0.05))
    assert j.verdict == "contradicted"
    assert j.reason_in(100) == "95 % CI [-0.6, +2.2], n = 5 excludes the paper's effect +5.0"
