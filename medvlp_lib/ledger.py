"""The claims ledger: every paper claim, the paper's number, ours, and an honest verdict.

Each :class:`Claim` names the results file that tests it. The function turning that file into (our number
as text, verdict, one-sentence explanation) lives with the chapter's experiments: a module in
``medvlp_lib.experiments`` contributes it through its ``CLAIMS = {claim_id: fn}`` dict (a claim may also
carry ``evaluate`` directly). Verdicts:

* ``reproduced`` — the effect has the paper's direction and exceeds seed noise (see
  :func:`medvlp_lib.results.compare`);
* ``not reproduced`` — it does not; the explanation says what we saw instead;
* ``not testable here`` — the claim needs data or hardware this book cannot have offline;
* ``pending`` — the chapter that tests it has not produced its ``cpu``-profile results yet.

Verdicts are computed from ``results/`` (``cpu`` profile), never typed in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .experiments import claim_evaluators
from .results import compare, fmt, read_result

__all__ = ["Claim", "CLAIMS", "compare", "fmt", "evaluate_claims", "ledger_frame", "VERDICTS"]

VERDICTS = ("reproduced", "not reproduced", "not testable here", "pending")


@dataclass
class Claim:
    id: str
    paper: str
    chapter: str
    claim: str
    paper_value: str
    result: str | None = None
    evaluate: Callable[[dict], tuple[str, str, str]] | None = None
    why_not_testable: str = ""


CLAIMS: list[Claim] = [
    # chapter 01: the motivation shared by MSD and the whole book
    Claim("clip-small-batch", "MSD+RFBE", "01", "Plain contrastive learning (CLIP) degrades at small batch size",
          "motivation (MM-MoCo 3.5 % R@1 at batch 16)", "clip_batch_size"),
    # MSD + RFBE (chapters 02-04)
    Claim("msd-vs-mmmoco", "MSD+RFBE", "02", "MSD beats MM-MoCo at batch 16 on R@1", "22.7 vs 3.5 R@1 (MIMIC-CXR)",
          "msd_vs_baselines"),
    Claim("msd-alpha1-fails", "MSD+RFBE", "03", "alpha = 1 fails while beta = 1 trains", "Tables 7/9",
          "msd_alpha_beta"),
    Claim("msd-best-ab", "MSD+RFBE", "03", "(alpha, beta) = (0.3, 0.7) is best", "Tables 7/9", "msd_alpha_beta"),
    Claim("msd-wmulti", "MSD+RFBE", "03", "w_multi = 10 beats w_multi = 1", "Eq. 5", "msd_loss_weights"),
    Claim("msd-fewshot", "MSD+RFBE", "02", "few-shot gain with MSD", "SIIM 83.8 -> 93.4 AUC (10 %)",
          "msd_vs_baselines"),
    Claim("rfbe-memory", "MSD+RFBE", "04", "RFBE keeps memory flat in batch size", "batch 512 in ~9 GB (RTX 4090)",
          "bench_rfbe"),
    # MoMKD (chapter 05)
    Claim("momkd-beats", "MoMKD", "05", "MoMKD beats WSI-only training and ABMIL", "HER2 79.6 vs 73.9 / 72.9",
          "momkd_main"),
    Claim("momkd-shift", "MoMKD", "05", "momentum memory holds under domain shift where fixed memory drops",
          "82.3 -> 79.4 vs 81.9 -> 73.5", "momkd_memory"),
    Claim("momkd-both-align", "MoMKD", "05", "both alignments are needed", "75.2 / 75.7 vs 79.6", "momkd_ablations"),
    Claim("momkd-variance", "MoMKD", "05", "lower variance across folds", "± 0.7-2.3 vs ± 2-5", "momkd_main"),
    Claim("momkd-no-recon", "MoMKD", "05", "omics reconstruction helps (no-reconstruction ablation is worse)",
          "79.6 vs 78.0", "momkd_ablations"),
    Claim("momkd-slots", "MoMKD", "05", "harder tasks keep more active memory slots",
          "HER2 (hard) more active slots than PR/ODX (easy); no numbers", "momkd_main"),
    # VLCD (chapter 06)
    Claim("vlcd-match-teacher", "VLCD", "06", "students match or beat the teacher's AUC", "5 placenta tasks",
          "vlcd_students"),
    Claim("vlcd-efficiency", "VLCD", "06", "students are 1.7-4x faster with 25-50 % of the parameters",
          "1.7-4x, 25-50 %", "bench_vlcd"),
    Claim("vlcd-predistill", "VLCD", "06", "predistillation improves robustness on low-quality images",
          "iPad images", "vlcd_predistill"),
    Claim("vlcd-lambda", "VLCD", "06", "lambda = 0.1 is the best setting", "sweep 0.01-10", "vlcd_lambda"),
    # Adaptor (chapters 07-08)
    Claim("adaptor-params", "Adaptor", "07", "over 90 % fewer trainable parameters", "~12 M vs 135-173 M",
          "adaptor_params"),
    Claim("adaptor-1pct", "Adaptor", "07", "competitive with end-to-end at 1 % labels", "RSNA AUC 84.4 at 1 %",
          "adaptor_downstream"),
    Claim("adaptor-clusters", "Adaptor", "08", "the Adaptor improves cluster separation (t-SNE/UMAP)",
          "t-SNE, COVIDx", "adaptor_downstream"),
    Claim("adaptor-seg", "Adaptor", "07", "segmentation at 1 % labels is competitive", "SIIM Dice",
          "adaptor_downstream"),
]


def evaluate_claims(claims=None, directory=None) -> list[dict]:
    """Evaluate every claim against ``results/``; a claim without results is ``pending``."""
    evaluators = claim_evaluators()
    rows = []
    for c in claims or CLAIMS:
        evaluate = c.evaluate or evaluators.get(c.id)
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
