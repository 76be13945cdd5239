"""The book's verdict protocol as code: paired differences, their confidence interval, and the rule that turns
them into a verdict (written down in ``book/reproducibility.md`` before any result was re-run).

Pairing
-------
Two methods are compared on the *same* seeds (same data order, same initialisation where the architectures
allow, same folds). For every seed ``s`` the paired difference is ``d_s = sign * (A_s - B_s)`` with ``sign = +1``
when the paper says higher is better (``-1`` otherwise), so ``d > 0`` is always the paper's direction. Where an
experiment has cross-validation folds, the folds of one seed share that seed's cohort and are not independent:
the fold differences are averaged within the seed first (:func:`paired_differences` with ``folds``), and the
seed is the unit of replication (``n`` = number of seeds).

Interval
--------
With ``n`` paired differences, mean ``d̄``, standard deviation ``s`` (``ddof = 1``) and ``se = s / sqrt(n)``:

    two-sided 95 % CI:  d̄ ± t_{0.975, n-1} se          (superiority)
    one-sided 95 %:     lower = d̄ - t_{0.95, n-1} se   (non-inferiority)
    minimal detectable effect (80 % power, two-sided 5 %):  MDE = (t_{0.975, n-1} + t_{0.80, n-1}) se

(Student's t, as for a paired t-test.)

Rule (:func:`decide`)
---------------------
``superiority`` (the paper: A beats B by ``paper_effect`` > 0, in our metric's units):

* ``reproduced``    -- the CI lies above 0 (``lo > 0``);
* ``contradicted``  -- the CI lies below 0 (the opposite direction beyond noise), or it excludes the paper's
  effect (``hi < paper_effect``) while not excluding 0;
* ``inconclusive``  -- the CI holds both 0 and the paper's effect.

``non-inferiority`` (the paper: A matches / is competitive with / at least as good as B) with a margin ``m > 0``
stated in the claim row before the run:

* ``reproduced``    -- the one-sided 95 % lower bound is above ``-m``;
* ``contradicted``  -- the two-sided CI lies below ``-m`` (A worse than B by more than the margin);
* ``inconclusive``  -- otherwise. "Not worse beyond noise" is never ``reproduced``.

``threshold`` (a deterministic measurement, e.g. a parameter count or a benchmark ratio, with no seed noise):
``reproduced`` when the value meets the paper's threshold in the claim's direction, else ``contradicted``.

Fewer than ``min_n`` (5) paired seeds give ``pending``: the protocol needs at least five. ``not testable here``
is declared by the claim row (data or hardware the book cannot have), never computed.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as _st

__all__ = ["KINDS", "VERDICTS", "MIN_SEEDS", "PairedEstimate", "paired_differences", "paired_estimate", "decide"]

KINDS = ("superiority", "non-inferiority", "threshold")
VERDICTS = ("reproduced", "contradicted", "inconclusive", "not testable here", "pending")
MIN_SEEDS = 5


@dataclass(frozen=True)
class PairedEstimate:
    """Summary of ``n`` paired differences (in the paper's direction): mean, sd, se, the two-sided 95 % CI
    ``[lo, hi]``, the one-sided 95 % bounds ``lo_one`` / ``hi_one``, the minimal detectable effect ``mde``
    (80 % power) and the differences themselves."""
    n: int
    mean: float
    sd: float
    se: float
    lo: float
    hi: float
    lo_one: float
    hi_one: float
    mde: float
    diffs: tuple[float, ...]

    def as_dict(self) -> dict:
        return asdict(self)


def _values(x, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 0:
        arr = arr[None]
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or infinite values: {arr.tolist()}")
    return arr


def paired_differences(a: Mapping, b: Mapping, higher_is_better: bool = True) -> np.ndarray:
    """Per-seed differences ``sign * (a[s] - b[s])`` for the seeds both mappings hold (sorted by seed).

    ``a`` / ``b``: ``{seed: value}`` or ``{seed: [fold values]}`` (folds are averaged within the seed after
    pairing fold by fold, so both must have the same number of folds per seed). Seeds present in only one
    mapping raise a ``ValueError`` naming them: an unpaired seed is a design error, not something to drop.
    """
    if not isinstance(a, Mapping) or not isinstance(b, Mapping):
        raise TypeError(f"a and b must map seed -> value (or fold values), got {type(a).__name__}, "
                        f"{type(b).__name__}")
    only = sorted(set(map(str, a)) ^ set(map(str, b)))
    if only:
        raise ValueError(f"seeds {only} are in only one of the two runs; a paired comparison needs the same seeds")
    sign = 1.0 if higher_is_better else -1.0
    out = []
    for key in sorted(a, key=lambda k: (0, int(k), "") if str(k).isdigit() else (1, 0, str(k))):
        va, vb = _values(a[key], f"a[{key!r}]"), _values(b[key], f"b[{key!r}]")
        if va.shape != vb.shape:
            raise ValueError(f"seed {key!r}: {va.size} fold values against {vb.size}; folds must pair one to one")
        out.append(sign * float(np.mean(va - vb)))
    return np.asarray(out, dtype=np.float64)


def paired_estimate(diffs: Sequence[float], alpha: float = 0.05, power: float = 0.8) -> PairedEstimate:
    """Mean, standard error, t-interval and minimal detectable effect of paired differences (see module doc).

    With one difference the spread is unknown: ``sd``, ``se``, the bounds and the MDE are NaN."""
    d = _values(diffs, "diffs")
    if d.size == 0:
        raise ValueError("diffs is empty: no paired seeds")
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"alpha and power must be in (0, 1), got {alpha}, {power}")
    n, mean = int(d.size), float(d.mean())
    if n < 2:
        nan = float("nan")
        return PairedEstimate(n, mean, nan, nan, nan, nan, nan, nan, nan, tuple(d.tolist()))
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    t2 = float(_st.t.ppf(1 - alpha / 2, n - 1))
    t1 = float(_st.t.ppf(1 - alpha, n - 1))
    tp = float(_st.t.ppf(power, n - 1))
    return PairedEstimate(n, mean, sd, se, mean - t2 * se, mean + t2 * se, mean - t1 * se, mean + t1 * se,
                          (t2 + tp) * se, tuple(d.tolist()))


def decide(kind: str, *, estimate: PairedEstimate | None = None, paper_effect: float | None = None,
           margin: float | None = None, value: float | None = None, threshold: float | None = None,
           higher_is_better: bool = True, min_n: int = MIN_SEEDS, scale: float = 1.0) -> tuple[str, str]:
    """The verdict of one claim by the written rule (module docstring): ``(verdict, reason)``.

    * ``superiority``: needs ``estimate`` (differences in the paper's direction) and ``paper_effect`` > 0 (the
      paper's effect in our metric's units and direction; ``None`` when the paper states none in this metric:
      then only the opposite direction beyond noise contradicts);
    * ``non-inferiority``: needs ``estimate`` and ``margin`` > 0;
    * ``threshold``: needs ``value`` and ``threshold`` (``higher_is_better`` says which side meets it).

    ``scale`` only changes how the reason prints the interval, effect, margin and MDE (100: fractions as points).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "threshold":
        if value is None or threshold is None or not (math.isfinite(value) and math.isfinite(threshold)):
            raise ValueError(f"a threshold claim needs finite value and threshold, got {value!r}, {threshold!r}")
        met = value >= threshold if higher_is_better else value <= threshold
        rel = ">=" if higher_is_better else "<="
        return ("reproduced", f"{value:.4g} {rel} {threshold:.4g} (deterministic measurement)") if met else \
            ("contradicted", f"{value:.4g} misses {rel} {threshold:.4g} (deterministic measurement)")
    if not isinstance(estimate, PairedEstimate):
        raise TypeError(f"a {kind} claim needs estimate=paired_estimate(...), got {type(estimate).__name__}")
    if estimate.n < min_n:
        return "pending", (f"{estimate.n} paired seed{'s' if estimate.n != 1 else ''}; the protocol needs at least "
                           f"{min_n}")
    # in the metric's own units four significant digits; scaled (e.g. AUC points) one decimal, like the tables
    sg, ug = ("+.4g", ".4g") if scale == 1.0 else ("+.1f", ".1f")
    ci = f"95 % CI [{estimate.lo * scale:{sg}}, {estimate.hi * scale:{sg}}], n = {estimate.n}"
    if kind == "superiority":
        if paper_effect is not None and (not math.isfinite(paper_effect) or paper_effect <= 0):
            raise ValueError(f"a superiority claim needs the paper's effect > 0 in the paper's direction, got "
                             f"{paper_effect!r}")
        if estimate.lo > 0:
            return "reproduced", f"the paper's direction: {ci} lies above 0"
        if estimate.hi < 0:
            return "contradicted", f"the opposite direction beyond noise: {ci} lies below 0"
        if paper_effect is None:  # the claim row states no effect in this metric: only the direction can decide
            return "inconclusive", (f"{ci} holds 0 (no paper effect is stated in this metric); the minimal "
                                    f"detectable effect at this n is {estimate.mde * scale:{ug}}")
        if estimate.hi < paper_effect:
            return "contradicted", f"{ci} excludes the paper's effect {paper_effect * scale:{sg}}"
        return "inconclusive", (f"{ci} holds both 0 and the paper's effect {paper_effect * scale:{sg}}; the minimal "
                                f"detectable effect at this n is {estimate.mde * scale:{ug}}")
    if margin is None or not math.isfinite(margin) or margin <= 0:
        raise ValueError(f"a non-inferiority claim needs a margin > 0 stated before the run, got {margin!r}")
    lo_one, m = estimate.lo_one * scale, margin * scale
    if estimate.lo_one > -margin:
        return "reproduced", (f"non-inferior: the one-sided 95 % lower bound {lo_one:{sg}} is above the "
                              f"margin -{m:{ug}} (n = {estimate.n})")
    if estimate.hi < -margin:
        return "contradicted", f"worse by more than the margin {m:{ug}}: {ci} lies below -{m:{ug}}"
    return "inconclusive", (f"the one-sided 95 % lower bound {lo_one:{sg}} does not clear the margin "
                            f"-{m:{ug}}, and {ci} does not exclude it; the minimal detectable effect is "
                            f"{estimate.mde * scale:{ug}}")
