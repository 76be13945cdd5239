"""Reading and writing ``results/*.json`` with provenance.

Every results file records what produced it: the command that regenerates it, the git commit, the
profile, the seeds, the machine and the wall time. Results files are written only by code, never by
hand; the book and the claims ledger read them through :func:`read_result`.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from . import stats
from .utils import git_commit, results_dir

__all__ = ["write_result", "read_result", "list_results", "current_command", "Stopwatch", "mean_std", "summary_entry",
           "relation", "fmt", "Comparison", "Judgement", "judge", "claim_verdict", "ONE_SEED", "Wording",
           "judge_claim", "VERDICTS", "paired", "ClaimResult"]

def _process_start() -> float:
    """Unix time at which this process started (Linux ``/proc``), else the time this module was imported."""
    try:
        with open("/proc/self/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as fh:
            btime = next(int(line.split()[1]) for line in fh if line.startswith("btime"))
        return btime + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration, AttributeError):
        return time.time()


_START = _process_start()


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds``."""

    def __enter__(self):
        self.t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        return False


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def current_command() -> str:
    """The command line of the running process as a reader would type it: ``python -m pkg.mod args`` for a
    module run with ``-m`` (``sys.argv[0]`` is then the module's absolute file path, which names one checkout),
    else ``python <script> args`` with the script relative to the working directory when it lies below it."""
    argv = list(sys.argv) or [""]
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and getattr(spec, "name", None):
        name = spec.name[: -len(".__main__")] if spec.name.endswith(".__main__") else spec.name
        head = ["-m", name]
    else:
        try:
            head = [os.path.relpath(argv[0])] if argv[0] and not os.path.relpath(argv[0]).startswith("..") else argv[:1]
        except ValueError:  # another drive (Windows)
            head = argv[:1]
    return " ".join(shlex.quote(a) for a in ["python", *head, *argv[1:]] if a != "")


def write_result(name: str, payload: dict, *, profile: str | None = None, seeds=None,
                 command: str | None = None, wall_time_s: float | None = None,
                 directory: str | Path | None = None) -> Path:
    """Write ``results/<name>.json`` = payload + provenance; returns the path.

    ``command`` defaults to the command line of the running process. ``wall_time_s`` defaults to the
    time since the process started (a benchmark that imports this module last still records its run time).
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"result name must be a plain file stem like 'clip_batch_size', got {name!r}")
    if not isinstance(payload, dict):
        raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
    if command is None:
        command = current_command()
    record = {
        "name": name,
        "command": command,
        "commit": git_commit(),
        "profile": profile,
        "seeds": list(seeds) if seeds is not None else None,
        "wall_time_s": round(wall_time_s if wall_time_s is not None else time.time() - _START, 2),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": _machine(),
        **_jsonable(payload),
    }
    out = Path(directory) if directory is not None else results_dir()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def read_result(name: str, directory: str | Path | None = None) -> dict:
    """Load ``results/<name>.json``; a clear error says which command would create it if missing."""
    base = Path(directory) if directory is not None else results_dir()
    path = base / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"no results file {path}; run `python -m medvlp_lib.experiments run {name}` "
                                "(or the benchmark of that name) to create it")
    return json.loads(path.read_text())


def list_results(directory: str | Path | None = None) -> list[str]:
    base = Path(directory) if directory is not None else results_dir()
    return sorted(p.stem for p in base.glob("*.json"))


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    arr = np.asarray(list(values), dtype=float)
    if arr.size == 0:
        raise ValueError("mean_std needs at least one value")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def summary_entry(values, seeds=None) -> dict:
    """A results summary entry ``{"mean", "std", "n", "values"[, "seeds"]}`` over seeds (std: :func:`mean_std`);
    ``seeds`` (one per value) lets comparisons pair the values by seed (:func:`paired`)."""
    vals = [float(v) for v in values]
    mean, std = mean_std(vals)
    out = {"mean": mean, "std": std, "n": len(vals), "values": vals}
    if seeds is not None:
        seeds = [int(s) for s in seeds]
        if len(seeds) != len(vals):
            raise ValueError(f"summary_entry got {len(vals)} values but {len(seeds)} seeds")
        out["seeds"] = seeds
    return out


def fmt(entry: dict, scale: float = 100.0, digits: int = 1) -> str:
    """``"mean ± std"`` of a summary entry, both multiplied by ``scale`` (100: fractions as percentages)."""
    return f"{entry['mean'] * scale:.{digits}f} ± {entry['std'] * scale:.{digits}f}"


# ------------------------------------------------------------------------------------------------- verdicts
# The claims ledger's verdicts are decided here and nowhere else, by the written protocol of
# ``book/reproducibility.md`` (its statistics are :mod:`medvlp_lib.stats`). A claim declares its comparisons
# before the run -- which summary entries, the direction, superiority with the paper's effect or non-inferiority
# with a margin -- and its wording; :func:`judge` decides each comparison from the paired per-seed values,
# :func:`claim_verdict` the claim.
VERDICTS = stats.VERDICTS
"""``reproduced``, ``contradicted``, ``inconclusive``, ``not testable here``, ``pending``."""


@dataclass(frozen=True)
class Comparison:
    """One comparison a claim declares before the run: is ``a`` better than ``b`` (``"superiority"``, by the
    paper's effect ``paper_effect``), or not worse than ``b`` by more than ``margin`` (``"non-inferiority"``), in
    the direction ``higher_is_better``?

    ``a`` and ``b`` are summary entries (:func:`summary_entry`: ``mean``, ``std``, ``n``, ``values`` and ``seeds``
    over seeds; an entry without ``values`` is a constant, e.g. chance level) or keys of the record's ``summary``
    (resolved by :func:`judge`). ``paper_effect`` and ``margin`` are in the metric's units (fractions for AUC),
    ``paper_effect`` in the claimed direction (> 0).
    """
    a: dict | str
    b: dict | str
    kind: Literal["superiority", "non-inferiority"] = "superiority"
    higher_is_better: bool = True
    margin: float = 0.0
    paper_effect: float | None = None

    def __post_init__(self):
        if self.kind not in ("superiority", "non-inferiority"):
            raise ValueError(f"Comparison.kind must be 'superiority' or 'non-inferiority', got {self.kind!r}")
        if not (isinstance(self.margin, (int, float)) and self.margin >= 0):
            raise ValueError(f"Comparison.margin must be a number >= 0, got {self.margin!r}")
        if self.kind == "superiority" and self.margin:
            raise ValueError("a superiority comparison has no margin (margin is for non-inferiority)")
        if self.kind == "non-inferiority" and not self.margin > 0:
            raise ValueError("a non-inferiority comparison needs margin > 0, stated before the run")
        if self.paper_effect is not None and not (isinstance(self.paper_effect, (int, float))
                                                  and self.paper_effect > 0):
            raise ValueError(f"Comparison.paper_effect is the paper's effect in the claimed direction (> 0), got "
                             f"{self.paper_effect!r}")


@dataclass(frozen=True)
class Judgement:
    """What :func:`judge` decided for one :class:`Comparison` under the protocol.

    ``estimate``: the paired differences ``a - b`` per seed in the claimed direction (:class:`stats.PairedEstimate`);
    ``diff``/``se``: its mean and standard error; ``verdict``/``reason``: :func:`stats.decide`'s outcome;
    ``supports``: the comparison is ``reproduced``; ``opposes``: ``b`` beats ``a`` beyond noise (the CI below 0, or
    below ``-margin`` for non-inferiority).
    """
    comparison: Comparison
    estimate: stats.PairedEstimate
    verdict: str
    reason: str

    @property
    def diff(self) -> float:
        return self.estimate.mean

    @property
    def se(self) -> float:
        return self.estimate.se

    @property
    def supports(self) -> bool:
        return self.verdict == "reproduced"

    def reason_in(self, scale: float) -> str:
        """:attr:`reason` with its numbers (interval, the paper's effect, margin, MDE) multiplied by ``scale``
        (100: fractions as points), so that the protocol's reason reads in the unit of the explanation around it."""
        c = self.comparison
        if self.verdict == "pending" or scale == 1.0:
            return self.reason
        kw = {"paper_effect": c.paper_effect} if c.kind == "superiority" else {"margin": c.margin}
        return stats.decide(c.kind, estimate=self.estimate, min_n=0, scale=scale, **kw)[1]

    @property
    def opposes(self) -> bool:
        e, c = self.estimate, self.comparison
        return bool(e.hi == e.hi and e.hi < -(c.margin if c.kind == "non-inferiority" else 0.0))


def _per_seed(entry: dict, seeds_hint) -> dict:
    if "values" not in entry:  # a constant (e.g. chance level): the same value for every seed
        return {str(s): float(entry["mean"]) for s in seeds_hint}
    values = [float(v) for v in entry["values"]]
    seeds = entry.get("seeds")
    if seeds is None:  # records written before entries kept their seeds: values are in the record's seed order
        seeds = list(seeds_hint)[:len(values)] if seeds_hint is not None and len(list(seeds_hint)) >= len(values) \
            else list(range(len(values)))
    if len(seeds) != len(values):
        raise ValueError(f"summary entry has {len(values)} values for {len(seeds)} seeds")
    return {str(s): v for s, v in zip(seeds, values)}


def paired(a: dict, b: dict, higher_is_better: bool = True) -> np.ndarray:
    """Per-seed paired differences ``a - b`` (in the claimed direction) of two summary entries."""
    hint = a.get("seeds") or b.get("seeds") or list(range(max(len(a.get("values", [])), len(b.get("values", [])))))
    return stats.paired_differences(_per_seed(a, hint), _per_seed(b, hint), higher_is_better)


def relation(a: dict, b: dict) -> str:
    """``"above"``, ``"below"`` or ``"within seed noise of"``: summary entry ``a`` against ``b`` by the 95 % t
    interval of their paired per-seed differences -- the protocol's interval (:func:`judge`), without a margin or
    the paper's effect, for prose that compares two measured numbers. A constant ``{"mean": x}`` pairs with every
    seed. Fewer than two paired seeds give ``"within seed noise of"`` (one seed is never evidence)."""
    e = stats.paired_estimate(paired(a, b))
    if e.n < 2:
        return "within seed noise of"
    return "above" if e.lo > 0 else "below" if e.hi < 0 else "within seed noise of"


def judge(comparison: Comparison, summary: dict | None = None, min_n: int = stats.MIN_SEEDS) -> Judgement:
    """Decide one comparison by the protocol: the paired differences over seeds, their t interval, and
    :func:`medvlp_lib.stats.decide` (superiority against 0 and the paper's effect; non-inferiority against the
    margin; fewer than ``min_n`` seeds: ``pending``). ``summary`` resolves entries given as keys (a missing key
    is a ``KeyError`` naming it)."""
    def entry(x):
        if isinstance(x, str):
            if summary is None or x not in summary:
                raise KeyError(f"the record's summary has no entry {x!r}")
            return summary[x]
        return x

    c = comparison
    est = stats.paired_estimate(paired(entry(c.a), entry(c.b), c.higher_is_better))
    if c.kind == "superiority":
        verdict, reason = stats.decide("superiority", estimate=est, paper_effect=c.paper_effect, min_n=min_n)
    else:
        verdict, reason = stats.decide("non-inferiority", estimate=est, margin=c.margin, min_n=min_n)
    return Judgement(c, est, verdict, reason)


def claim_verdict(judgements) -> str:
    """The verdict of a claim from its comparisons: ``pending`` if any is pending (too few seeds), else
    ``reproduced`` when every comparison is reproduced, ``contradicted`` when any is contradicted, else
    ``inconclusive``."""
    judgements = list(judgements)
    if not judgements:
        raise ValueError("a claim needs at least one comparison")
    verdicts = [j.verdict for j in judgements]
    if "pending" in verdicts:
        return "pending"
    if all(v == "reproduced" for v in verdicts):
        return "reproduced"
    return "contradicted" if "contradicted" in verdicts else "inconclusive"


ONE_SEED = (f"fewer than {stats.MIN_SEEDS} paired seeds: the protocol needs at least {stats.MIN_SEEDS} "
            f"(re-run the cpu profile with --seeds 0 1 2 3 4)")


@dataclass(frozen=True)
class Wording:
    """The explanation of a claim's verdict: format strings over the judgements' numbers.

    By verdict: ``reproduced``; ``contradicted`` and ``inconclusive`` (each defaults to ``not_reproduced``);
    ``opposed`` (optional) replaces the text when a comparison goes the other way beyond noise; ``pending``.
    Fields: ``{d1}``, ``{se1}``, ``{neg1}`` (= ``-d1``), ``{lo1}``, ``{hi1}``, ``{n1}``, ``{mde1}``, ``{d2}``, ...
    per comparison in order (``{d}``, ``{se}``, ``{neg}``, ``{lo}``, ``{hi}``, ``{n}``, ``{mde}`` for the first),
    multiplied by ``scale`` (100: fractions as points), plus any keyword given to :meth:`explain`. The protocol's
    own reason (the interval and what it excludes) is appended to every explanation but ``pending``.
    """
    reproduced: str
    not_reproduced: str
    opposed: str | None = None
    pending: str = ONE_SEED
    contradicted: str | None = None
    inconclusive: str | None = None
    scale: float = 100.0

    def explain(self, verdict: str, judgements, **extra) -> str:
        judgements = list(judgements)
        values = {}
        for i, j in enumerate(judgements, 1):
            e = j.estimate
            values.update({f"d{i}": j.diff * self.scale, f"se{i}": j.se * self.scale, f"neg{i}": -j.diff * self.scale,
                           f"lo{i}": e.lo * self.scale, f"hi{i}": e.hi * self.scale, f"n{i}": e.n,
                           f"mde{i}": e.mde * self.scale})
        values.update(d=values["d1"], se=values["se1"], neg=values["neg1"], lo=values["lo1"], hi=values["hi1"],
                      n=values["n1"], mde=values["mde1"], **extra)
        if verdict == "pending":
            return self.pending.format(**values)
        if verdict == "reproduced":
            text = self.reproduced
        elif self.opposed is not None and any(j.opposes for j in judgements):
            text = self.opposed
        elif verdict == "contradicted":
            text = self.contradicted or self.not_reproduced
        else:
            text = self.inconclusive or self.not_reproduced
        rule = "; ".join(j.reason_in(self.scale) for j in judgements)
        return f"{text.format(**values)} [{verdict}: {rule}]"


class ClaimResult(tuple):
    """``(ours, verdict, explanation)`` -- unpacks like the plain triple -- plus ``judgements``, the protocol's
    numbers behind the verdict (the ledger shows the first comparison's paired difference, CI, n and MDE)."""

    def __new__(cls, ours: str, verdict: str, explanation: str, judgements=()):
        out = super().__new__(cls, (ours, verdict, explanation))
        out.judgements = tuple(judgements)
        return out


def judge_claim(ours: str, comparisons, wording: Wording, summary: dict | None = None,
                **extra) -> ClaimResult:
    """``(ours, verdict, explanation)`` of a claim (a :class:`ClaimResult`): every comparison judged
    (:func:`judge`), the verdict from :func:`claim_verdict`, the explanation from ``wording`` (``extra``: more
    format fields)."""
    judgements = [judge(c, summary) for c in comparisons]
    verdict = claim_verdict(judgements)
    return ClaimResult(ours, verdict, wording.explain(verdict, judgements, **extra), judgements)
