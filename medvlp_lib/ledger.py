"""The claims ledger: every paper claim, the paper's number, ours, and an honest verdict.

Each chapter's experiment module declares the claims its results test (:func:`medvlp_lib.experiments.claim`:
the claim, the paper's number, the results file and the function turning that file into (our number as text,
verdict, one-sentence explanation)); this module only collects them (:data:`CLAIMS`, chapter order) and
evaluates them against ``results/``. The rule that decides a verdict lives in :mod:`medvlp_lib.results`
(:func:`~medvlp_lib.results.judge`, :func:`~medvlp_lib.results.claim_verdict`). Verdicts:

* ``reproduced`` — the effect has the paper's direction and exceeds seed noise (see
  :func:`medvlp_lib.results.compare`);
* ``not reproduced`` — it does not; the explanation says what we saw instead;
* ``not testable here`` — the claim needs data or hardware this book cannot have offline;
* ``pending`` — the chapter that tests it has not produced its ``cpu``-profile results yet (or they cannot
  decide it, e.g. a single seed).

Verdicts are computed from ``results/`` (``cpu`` profile), never typed in.
"""
from __future__ import annotations

from .experiments import Claim
from .experiments import claims as declared_claims
from .results import compare, fmt, read_result

__all__ = ["Claim", "CLAIMS", "compare", "fmt", "evaluate_claims", "ledger_frame", "VERDICTS"]

VERDICTS = ("reproduced", "not reproduced", "not testable here", "pending")

CLAIMS: list[Claim] = declared_claims()
"""Every claim the experiment modules declare, in chapter order."""


def evaluate_claims(claims=None, directory=None) -> list[dict]:
    """Evaluate every claim against ``results/``; a claim without results is ``pending``."""
    rows = []
    for c in claims or CLAIMS:
        evaluate = c.evaluate
        row = {"id": c.id, "paper": c.paper, "chapter": c.chapter, "claim": c.claim, "paper's number": c.paper_value,
               "ours": "—", "verdict": "pending", "explanation": f"chapter {c.chapter} has not produced its "
                                                               "cpu-profile results yet"}
        if c.why_not_testable:
            row.update(verdict="not testable here", explanation=c.why_not_testable)
        elif c.result and evaluate is not None:
            try:
                rec = read_result(c.result, directory=directory)
            except FileNotFoundError:
                rec = None
            if rec is not None:
                ours, verdict, why = evaluate(rec)
                if verdict not in VERDICTS:
                    raise ValueError(f"claim {c.id}: evaluate returned unknown verdict {verdict!r}")
                row.update(ours=ours, verdict=verdict, explanation=why)
        rows.append(row)
    return rows


def ledger_frame(claims=None, directory=None):
    import pandas as pd
    return pd.DataFrame(evaluate_claims(claims, directory)).set_index("id")
