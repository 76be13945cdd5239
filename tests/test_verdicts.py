"""The one verdict helper (medvlp_lib.results): each comparison kind and outcome on constructed summary entries,
and every ledger claim declared once, next to its evaluator."""
from __future__ import annotations

import math

import pytest

from medvlp_lib import experiments, ledger
from medvlp_lib.results import (ONE_SEED, Comparison, Wording, claim_verdict, compare, judge, judge_claim,
                                summary_entry)

HI = summary_entry([0.80, 0.81, 0.82])
MID = summary_entry([0.70, 0.71, 0.72])
NEAR = summary_entry([0.79, 0.81, 0.80])
ONE = summary_entry([0.90])
WORDS = Wording(reproduced="yes {d:.1f} ({se:.1f})", not_reproduced="no {d:+.1f}", opposed="other way {neg:.1f}")


def test_superiority_supports_only_beyond_noise():
    j = judge(Comparison(HI, MID))
    assert j.supports and not j.opposes and j.diff == pytest.approx(0.10)
    assert j.se == pytest.approx(compare(HI, MID)[2])
    assert claim_verdict([j]) == "reproduced"
    j = judge(Comparison(NEAR, HI))
    assert not j.supports and not j.opposes and claim_verdict([j]) == "not reproduced"  # within noise
    j = judge(Comparison(MID, HI))
    assert not j.supports and j.opposes and claim_verdict([j]) == "not reproduced"     # the other way
    j = judge(Comparison(ONE, MID))
    assert not j.supports and not j.opposes and math.isnan(j.se)                     # one seed: no evidence
    assert claim_verdict([j]) == "not reproduced"
    assert judge(Comparison(MID, HI, higher_is_better=False)).supports                 # lower is better


def test_non_inferiority_and_its_margin():
    assert judge(Comparison(NEAR, HI, kind="non-inferiority")).supports                # not worse beyond noise
    assert claim_verdict([judge(Comparison(HI, MID, kind="non-inferiority"))]) == "reproduced"
    j = judge(Comparison(MID, HI, kind="non-inferiority"))
    assert j.opposes and not j.supports and claim_verdict([j]) == "not reproduced"     # worse beyond noise
    # a margin of 0.15 tolerates the 0.10 gap; one of 0.05 does not
    assert judge(Comparison(MID, HI, kind="non-inferiority", margin=0.15)).supports
    assert judge(Comparison(MID, HI, kind="non-inferiority", margin=0.05)).opposes
    j = judge(Comparison(ONE, MID, kind="non-inferiority"))
    assert claim_verdict([j]) == "pending"                                             # cannot judge "not worse"
    with pytest.raises(ValueError, match="kind"):
        Comparison(HI, MID, kind="equivalence")
    with pytest.raises(ValueError, match="no margin"):
        Comparison(HI, MID, margin=0.1)
    with pytest.raises(ValueError, match="at least one comparison"):
        claim_verdict([])


def test_a_claim_with_two_comparisons_needs_both():
    both = [judge(Comparison(HI, MID)), judge(Comparison(HI, MID))]
    one = [judge(Comparison(HI, MID)), judge(Comparison(NEAR, HI))]
    assert claim_verdict(both) == "reproduced" and claim_verdict(one) == "not reproduced"


def test_judge_claim_words_each_verdict():
    summary = {"a/auc": HI, "b/auc": MID, "c/auc": NEAR}
    assert judge_claim("ours", [Comparison("a/auc", "b/auc")], WORDS, summary) == ("ours", "reproduced",
                                                                                   "yes 10.0 (0.8)")
    assert judge_claim("o", [Comparison("c/auc", "a/auc")], WORDS, summary)[1:] == ("not reproduced", "no -1.0")
    assert judge_claim("o", [Comparison("b/auc", "a/auc")], WORDS, summary)[2] == "other way 10.0"
    words = Wording(reproduced="{d1:.0f}+{d2:.0f} {note}", not_reproduced="-", scale=1000)
    assert judge_claim("o", [Comparison(HI, MID), Comparison(HI, NEAR, kind="non-inferiority")], words,
                       note="n")[2] == "100+10 n"
    assert judge_claim("o", [Comparison(ONE, MID, kind="non-inferiority")], WORDS)[1:] == ("pending", ONE_SEED)
    with pytest.raises(KeyError, match="no entry 'd/auc'"):
        judge_claim("o", [Comparison("d/auc", "a/auc")], WORDS, summary)


def test_every_claim_is_declared_once_next_to_its_evaluator():
    ids = [c.id for c in ledger.CLAIMS]
    assert len(ids) == len(set(ids)) == 21
    assert [c.chapter for c in ledger.CLAIMS] == sorted(c.chapter for c in ledger.CLAIMS)  # chapter order
    evaluators = experiments.claim_evaluators()
    for c in ledger.CLAIMS:
        assert c.result and callable(c.evaluate) and evaluators[c.id] is c.evaluate
        module = experiments.claims_of(c.evaluate.__module__)
        assert module[c.id] is c.evaluate  # the chapter module's CLAIMS dict holds it
