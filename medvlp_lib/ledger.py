"""The claims ledger: every paper claim, the paper's effect, ours, and a verdict by the written protocol.

Each chapter's experiment module declares the claims its results test (:func:`medvlp_lib.experiments.claim`:
the claim, the paper's number, the results file and the function turning that file into (our number as text,
verdict, explanation)); this module only collects them (:data:`CLAIMS`, chapter order) and evaluates them against
``results/`` (cpu profile) and ``results/gpu/`` (the papers' data and models) side by side. The rule that decides
a verdict is the protocol of ``book/reproducibility.md``, implemented once in :mod:`medvlp_lib.results`
(:func:`~medvlp_lib.results.judge`, :func:`~medvlp_lib.results.claim_verdict`) over :mod:`medvlp_lib.stats`:

* ``reproduced`` — the 95 % CI of the paired difference excludes 0 in the paper's direction (non-inferiority: its
  one-sided bound clears the pre-stated margin); ``contradicted`` — it excludes the paper's effect or shows the
  opposite direction; ``inconclusive`` — it holds both (the row shows the minimal detectable effect);
* ``not testable here`` — the claim needs data or hardware this book cannot have;
* ``pending`` — no results file yet, or fewer than 5 paired seeds.

Verdicts are computed from the results files, never typed in.
"""
from __future__ import annotations

import math

from .experiments import Claim
from .experiments import claims as declared_claims
from .results import VERDICTS, fmt, read_result, relation
from .utils import results_dir

__all__ = ["Claim", "CLAIMS", "relation", "fmt", "evaluate_claims", "ledger_frame", "VERDICTS", "gpu_command"]

CLAIMS: list[Claim] = declared_claims()
"""Every claim the experiment modules declare, in chapter order."""


def gpu_command(result: str) -> str:
    """The command that writes ``results/gpu/<result>.json`` (the papers' data and models, ``MEDVLP_DATA``)."""
    return f"python -m medvlp_lib.experiments run {result} --profile gpu --seeds 0 1 2 3 4"


def _evaluate(c: Claim, directory) -> dict:
    """One profile's columns for claim ``c`` from the results in ``directory``."""
    try:
        rec = read_result(c.result, directory=directory)
    except FileNotFoundError:
        return {}
    result = c.evaluate(rec)
    ours, verdict, why = result
    if verdict not in VERDICTS:
        raise ValueError(f"claim {c.id}: evaluate returned unknown verdict {verdict!r}; expected one of {VERDICTS}")
    out = {"ours": ours, "verdict": verdict, "explanation": why, "commit": rec.get("commit"), "seeds": rec.get("seeds")}
    js = getattr(result, "judgements", ())
    if js:
        j, scale = js[0], c.scale
        e, comp = j.estimate, j.comparison
        out.update(diff=e.mean * scale, lo=e.lo * scale, hi=e.hi * scale, n=e.n, mde=e.mde * scale,
                   effect=(comp.paper_effect * scale if comp.paper_effect is not None else math.nan),
                   margin=(comp.margin * scale if comp.kind == "non-inferiority" else math.nan), kind=comp.kind,
                   unit=c.unit)
    return out


def evaluate_claims(claims=None, directory=None, gpu_directory=None) -> list[dict]:
    """Evaluate every claim against the cpu results (``directory``, default ``results/``) and the gpu results
    (``gpu_directory``, default ``results/gpu/``). A claim without results is ``pending`` (cpu) or ``no gpu result
    yet`` with the command that would produce it (gpu).

    Row keys: ``id``, ``paper``, ``chapter``, ``claim``, ``paper's number``, ``ours``, ``verdict``, ``explanation``
    (cpu), ``diff``, ``lo``, ``hi``, ``n``, ``mde``, ``effect`` (the paper's effect), ``margin`` and ``kind`` (the
    first comparison, in points; NaN where the claim is a measurement), and ``gpu verdict`` / ``gpu ours`` /
    ``gpu explanation``.
    """
    gpu_directory = gpu_directory if gpu_directory is not None else (
        (results_dir() / "gpu") if directory is None else None)
    rows = []
    for c in claims or CLAIMS:
        row = {"id": c.id, "paper": c.paper, "chapter": c.chapter, "claim": c.claim, "paper's number": c.paper_value,
               "ours": "—", "verdict": "pending", "explanation": f"chapter {c.chapter} has not produced its "
                                                               "cpu-profile results yet",
               "diff": math.nan, "lo": math.nan, "hi": math.nan, "n": 0, "mde": math.nan, "effect": math.nan,
               "margin": math.nan, "kind": "", "unit": c.unit, "gpu verdict": "no gpu result yet", "gpu ours": "—",
               "gpu explanation": f"run `{gpu_command(c.result)}`" if c.result else ""}
        if c.why_not_testable:
            row.update(verdict="not testable here", explanation=c.why_not_testable)
        elif c.result and c.evaluate is not None:
            row.update(_evaluate(c, directory))
            if gpu_directory is not None and (gpu := _evaluate(c, gpu_directory)):
                row.update({"gpu verdict": gpu["verdict"], "gpu ours": gpu["ours"],
                            "gpu explanation": gpu["explanation"]})
        rows.append(row)
    return rows


def ledger_frame(claims=None, directory=None):
    import pandas as pd
    return pd.DataFrame(evaluate_claims(claims, directory)).set_index("id")
