"""Named experiments with profiles and seeds, runnable from the command line and from notebooks.

An experiment is a function ``fn(cfg, seed: int) -> dict`` of metrics (nested dicts of numbers are flattened to
``"a/b"`` keys). Each experiment declares its configuration per profile, as instances of one typed, frozen
configuration class per chapter (:class:`medvlp_lib.config.Config`; e.g. ``clip_baseline.ClipConfig``), the
profiles derived from one another with ``replace``, so a misspelled key is an error:

* ``fast`` — what CI and the book build execute (seconds to a couple of minutes on CPU);
* ``cpu``  — a laptop run large enough for the paper's effect, if it exists, to show above seed noise;
  its results are committed under ``results/`` and discussed in the prose and the claims ledger;
* ``gpu``  — the papers' own scale.

``run(name, profile, seeds)`` runs every seed, aggregates mean +/- std per metric and writes
``results/<name>.json`` (``cpu``), ``results/gpu/<name>.json`` (``gpu``) or ``results/tmp/<name>__fast.json``
(``fast``, not committed),
with the command that regenerates it, the commit, the seeds, the wall time and the configuration as a plain dict
(``cfg.to_dict()``; ``Experiment.config_of(record)`` reads it back).

A chapter's module also declares the paper's claims its results test (:func:`claim`, decorating the function
that turns the results file into ``(ours, verdict, explanation)`` with :func:`medvlp_lib.results.judge_claim`);
:mod:`medvlp_lib.ledger` collects them.

Every configuration has ``data`` (``"embedded"`` or ``"real"``: the papers' datasets under ``MEDVLP_DATA``; every
``gpu`` profile uses ``"real"``), ``num_workers`` and ``amp`` (:class:`medvlp_lib.config.ExperimentConfig`).
Experiments train through :func:`fit_run`, which adds the run's settings (:class:`RunSettings`: a run folder per
experiment / seed / model with checkpoints and exact ``--resume``, the device, DataLoader workers, mixed
precision) to :func:`medvlp_lib.train.fit`. ``--smoke`` runs an experiment's *gpu* code path end to end on tiny
stand-ins of the same model classes (the configuration's ``smoke()``) against fixture trees written in the
datasets' official layouts (:mod:`medvlp_lib.data.real.fixtures`); a smoke result never lands in ``results/``.

Command line::

    python -m medvlp_lib.experiments list [NAME ...]
    python -m medvlp_lib.experiments run clip_batch_size --profile cpu --seeds 0 1 2 [--set epochs=3 ...]
    python -m medvlp_lib.experiments run msd_vs_baselines --profile gpu --run-dir runs/ [--resume]
    torchrun --standalone --nproc_per_node 4 -m medvlp_lib.experiments run msd_vs_baselines --profile gpu
    python -m medvlp_lib.experiments smoke [NAME ...] [--device cuda]
"""
from __future__ import annotations

import contextvars
import dataclasses
import importlib
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..config import Config, ExperimentConfig, Variant, override
from ..results import fmt, read_result, summary_entry, write_result
from ..stats import MIN_SEEDS
from ..train import fit, is_main_process
from ..utils import check_seed, environ, results_dir

__all__ = ["Experiment", "register", "get", "names", "run", "load", "summary_table", "flatten", "claim_evaluators",
           "variant_table", "late_mean", "binned_curve", "Claim", "claim", "claims", "claims_of", "Config", "Variant",
           "PROFILES", "RunSettings", "current_run", "fit_run", "results_directory", "smoke"]

PROFILES = ("fast", "cpu", "gpu")
_REGISTRY: dict[str, "Experiment"] = {}
# every module in this package defines experiments; they are imported lazily so `list` sees everything
# (a chapter adds its experiments by adding a module here, without touching this file)


def _modules() -> list[str]:
    import pkgutil
    return [f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]


# ------------------------------------------------------------------------------------------------- run settings
@dataclass(frozen=True)
class RunSettings:
    """How a run trains, not what: set by :func:`run` for the experiment's code (read with :func:`current_run`).

    ``run_dir``: a folder for checkpoints -- :func:`fit_run` trains model ``tag`` of seed ``k`` of experiment
    ``name`` in ``<run_dir>/<name>/seed<k>/<tag>`` and checkpoints every ``ckpt_every`` steps (and at the end);
    ``resume``: continue every such run from its newest good checkpoint (a finished one is loaded, not trained
    again); ``device``: e.g. ``"cuda"`` (default: the best available); ``smoke``: this is a smoke run.
    """
    name: str = ""
    seed: int = 0
    run_dir: Path | None = None
    resume: bool = False
    ckpt_every: int = 500
    device: str | None = None
    smoke: bool = False


_RUN: contextvars.ContextVar[RunSettings] = contextvars.ContextVar("medvlp_run", default=RunSettings())


def current_run() -> RunSettings:
    """The settings of the run in progress (defaults outside :func:`run`: no run folder, no resume)."""
    return _RUN.get()


def fit_run(method, data, *, tag: str, cfg: ExperimentConfig | None = None, **kwargs) -> list[dict]:
    """:func:`medvlp_lib.train.fit` with the run's settings: a run folder per (experiment, seed, ``tag``) with
    checkpoints and exact resume when the run has ``run_dir``, the run's device, and ``cfg``'s DataLoader workers
    and mixed precision. ``tag`` names the model inside one seed (e.g. ``"clip_b16"``, ``"fold2/momkd"``);
    ``kwargs`` go to ``fit`` unchanged."""
    if not isinstance(tag, str) or not tag or tag.startswith("/") or ".." in tag.split("/"):
        raise ValueError(f"tag must be a relative name such as 'clip' or 'fold0/momkd', got {tag!r}")
    run = current_run()
    settings = {}
    if run.run_dir is not None:
        settings.update(run_dir=Path(run.run_dir) / (run.name or "experiment") / f"seed{run.seed}" / tag,
                        resume=run.resume, ckpt_every=run.ckpt_every)
    if run.device is not None and "device" not in kwargs:
        settings["device"] = run.device
    if cfg is not None:
        settings.update(num_workers=cfg.num_workers, amp=cfg.amp)
    return fit(method, data, **{**settings, **kwargs})


def results_directory(profile: str) -> Path:
    """Where :func:`run` writes a profile's results: ``results/`` (cpu), ``results/gpu/`` (gpu),
    ``results/tmp/`` (fast)."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    return results_dir() / {"fast": "tmp", "cpu": "", "gpu": "gpu"}[profile]


@dataclass
class Experiment:
    """A named experiment: ``fn(cfg, seed) -> metrics`` and one configuration per profile (same class)."""
    name: str
    fn: Callable[[Config, int], dict]
    profiles: dict[str, Config]
    seeds: dict[str, tuple[int, ...]] = field(
        default_factory=lambda: {"fast": (0,), "cpu": tuple(range(MIN_SEEDS)), "gpu": tuple(range(MIN_SEEDS))})
    description: str = ""

    @property
    def config_class(self) -> type:
        return type(self.profiles["cpu"])

    def config(self, profile: str, overrides: dict | None = None) -> Config:
        """The configuration of ``profile`` with ``overrides`` (field names, dotted into nested configurations:
        ``{"ssl.steps": 5}``); an unknown key is a ``ValueError`` naming it and the known keys."""
        if profile not in self.profiles:
            raise ValueError(f"experiment {self.name!r} has no profile {profile!r}; it has {sorted(self.profiles)}")
        return override(self.profiles[profile], overrides, f"experiment {self.name!r}", what="override")

    def config_of(self, record: dict) -> Config:
        """The configuration a results file of this experiment recorded (``record["config"]``), typed again."""
        return self.config_class.from_dict(record["config"])


def register(name: str, profiles: dict[str, Config], seeds: dict | None = None, description: str = ""):
    """Decorator registering ``fn(cfg, seed) -> metrics`` under ``name`` with one configuration per profile."""
    missing = [p for p in PROFILES if p not in profiles]
    if missing:
        raise ValueError(f"experiment {name!r} must define every profile; missing {missing}")
    extra = sorted(set(profiles) - set(PROFILES))
    if extra:
        raise ValueError(f"experiment {name!r} has unknown profiles {extra}; profiles are {PROFILES}")
    classes = {p: type(c) for p, c in profiles.items()}
    if not all(isinstance(c, Config) for c in profiles.values()) or len(set(classes.values())) != 1:
        raise TypeError(f"experiment {name!r}: every profile must be an instance of one Config subclass, got "
                        + ", ".join(f"{p}: {c.__name__}" for p, c in classes.items()))

    def deco(fn):
        exp = Experiment(name, fn, dict(profiles), description=description or (fn.__doc__ or "").strip().split("\n")[0])
        if seeds:
            exp.seeds = {**exp.seeds, **seeds}
        _REGISTRY[name] = exp
        return fn
    return deco


# ------------------------------------------------------------------------------------------------- claims
@dataclass
class Claim:
    """One paper claim in the ledger: what the paper says, its number, and the results file that tests it.

    ``evaluate(record) -> (ours, verdict, explanation)`` turns that file into a verdict (with
    :func:`medvlp_lib.results.judge_claim`, whose :class:`~medvlp_lib.results.ClaimResult` also carries the
    protocol's numbers); ``why_not_testable`` marks a claim this book cannot test. ``scale`` and ``unit`` say how
    the ledger shows the paired difference (default: fractions as points, x100).
    """
    id: str
    paper: str
    chapter: str
    claim: str
    paper_value: str
    result: str | None = None
    evaluate: Callable[[dict], tuple[str, str, str]] | None = None
    why_not_testable: str = ""
    scale: float = 100.0
    unit: str = "points"


_CLAIMS: dict[str, Claim] = {}
_CLAIM_MODULES: dict[str, str] = {}


def claim(id: str, *, paper: str, chapter: str, claim: str, paper_value: str, result: str, scale: float = 100.0,
          unit: str = "points"):
    """Decorator declaring a ledger claim evaluated by the decorated ``fn(record) -> (ours, verdict, why)``
    against ``results/<result>.json`` (and ``results/gpu/<result>.json``); returns ``fn`` unchanged. ``scale`` /
    ``unit``: how the ledger shows the claim's paired difference (e.g. ``scale=1, unit="slots"``)."""
    def deco(fn):
        module = getattr(fn, "__module__", "")
        if id in _CLAIMS and _CLAIM_MODULES[id] != module:
            raise ValueError(f"claim {id!r} is declared in two modules ({_CLAIM_MODULES[id]}, {module})")
        _CLAIMS[id] = Claim(id, paper, chapter, claim, paper_value, result, fn, scale=scale, unit=unit)
        _CLAIM_MODULES[id] = module
        return fn
    return deco


def claims_of(module: str) -> dict[str, Callable]:
    """Claim id -> evaluator for the claims declared in ``module`` (a module's ``CLAIMS`` dict)."""
    return {cid: c.evaluate for cid, c in _CLAIMS.items() if _CLAIM_MODULES[cid] == module}


def claims() -> list[Claim]:
    """Every declared claim, in chapter order (declaration order within a chapter)."""
    _load_all()
    return sorted(_CLAIMS.values(), key=lambda c: c.chapter)


def _load_all():
    for mod in _modules():
        importlib.import_module(mod)


def claim_evaluators() -> dict:
    """Claim id -> evaluator ``fn(record) -> (ours, verdict, explanation)`` of every declared claim."""
    return {c.id: c.evaluate for c in claims()}


def names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get(name: str) -> Experiment:
    _load_all()
    if name not in _REGISTRY:
        raise ValueError(f"unknown experiment {name!r}; available: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def flatten(metrics: dict, prefix: str = "") -> dict[str, float]:
    """``{"b16": {"r1": 0.1}} -> {"b16/r1": 0.1}``; non-numeric leaves are dropped."""
    out = {}
    for key, value in metrics.items():
        k = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, k + "/"))
        elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            out[k] = float(value)
    return out


def _summarise(per_seed: dict[int, dict]) -> dict[str, dict]:
    flat = {seed: flatten(m) for seed, m in per_seed.items()}
    keys = sorted(set().union(*[set(f) for f in flat.values()])) if flat else []
    summary = {}
    for key in keys:
        seeds = [s for s in flat if key in flat[s] and np.isfinite(flat[s][key])]
        if not seeds:
            continue
        summary[key] = summary_entry([flat[s][key] for s in seeds], seeds=seeds)
    return summary


def result_name(name: str, profile: str) -> str:
    return name if profile != "fast" else f"tmp/{name}__fast"


def _one_seed(name: str, cfg: Config, seed: int, settings: RunSettings) -> dict:
    token = _RUN.set(dataclasses.replace(settings, name=name, seed=seed))
    try:
        return get(name).fn(cfg, seed)
    finally:
        _RUN.reset(token)


def _seed_worker(name: str, cfg: Config, seed: int, settings: RunSettings) -> dict:
    """One seed in a worker process (one thread, so parallel seeds do not fight over the cores)."""
    import torch
    torch.set_num_threads(1)
    return _one_seed(name, cfg, seed, settings)


def run(name: str, profile: str = "fast", seeds=None, overrides: dict | None = None, write: bool = True,
        verbose: bool = True, jobs: int = 1, *, run_dir=None, resume: bool = False, ckpt_every: int = 500,
        device: str | None = None, smoke: bool = False, directory=None) -> dict:
    """Run a named experiment for every seed and (optionally) write its results file; returns the record.

    ``jobs > 1`` runs seeds in that many worker processes, one thread each; every seed is seeded on its own,
    so the metrics do not depend on ``jobs`` beyond float summation order across thread counts.
    ``run_dir`` / ``resume`` / ``ckpt_every`` / ``device``: :class:`RunSettings` for the experiment's training.
    ``smoke=True`` runs the gpu profile's configuration shrunk by its ``smoke()`` (profile must be ``"gpu"``) and
    needs ``directory`` for the results (never ``results/``). Under ``torch.distributed`` only rank 0 writes.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    exp = get(name)
    cfg = exp.config(profile, overrides)
    if smoke:
        if profile != "gpu":
            raise ValueError(f"a smoke run exercises the gpu profile's code path; got profile={profile!r}")
        if write and directory is None:
            raise ValueError("a smoke run writes its results to a directory you give (directory=...), never results/")
        cfg = cfg.smoke()
    settings = RunSettings(run_dir=Path(run_dir) if run_dir is not None else None, resume=bool(resume),
                           ckpt_every=int(ckpt_every), device=device, smoke=bool(smoke))
    seeds = exp.seeds[profile] if seeds is None else seeds
    if isinstance(seeds, (str, bytes, int, float)) or not hasattr(seeds, "__iter__"):
        raise ValueError(f"seeds must be a sequence of non-negative integers, got {seeds!r}")
    seeds = tuple(check_seed(s, f"seeds[{j}]") for j, s in enumerate(seeds))
    if not seeds:
        raise ValueError("seeds must contain at least one seed")
    t0 = time.time()
    per_seed = {}
    if int(jobs) < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs!r}")
    if int(jobs) > 1 and len(seeds) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        if verbose:
            print(f"[{name}] profile={profile} seeds={list(seeds)} in {min(jobs, len(seeds))} processes", flush=True)
        with ProcessPoolExecutor(min(int(jobs), len(seeds)), mp_context=mp.get_context("spawn")) as pool:
            futures = {seed: pool.submit(_seed_worker, name, cfg, seed, settings) for seed in seeds}
            per_seed = {seed: fut.result() for seed, fut in futures.items()}
    else:
        for seed in seeds:
            if verbose:
                print(f"[{name}] profile={profile} seed={seed}", flush=True)
            per_seed[seed] = _one_seed(name, cfg, seed, settings)
    wall = time.time() - t0
    record = {"experiment": name, "description": exp.description, "config": cfg.to_dict(),
              "per_seed": {str(s): m for s, m in per_seed.items()}, "summary": _summarise(per_seed)}
    command = "python -m medvlp_lib.experiments run {} --profile {} --seeds {}".format(
        name, profile, " ".join(map(str, seeds)))
    if int(jobs) > 1:
        command += f" --jobs {int(jobs)}"
    if overrides:
        command += " --set " + " ".join(shlex.quote(f"{k}={_literal(_field(cfg, k))!r}") for k in overrides)
    if smoke:
        command += " --smoke"
        record["smoke"] = True
    if write and is_main_process():
        rname = result_name(name, profile)
        directory = Path(directory) if directory is not None else results_directory(profile)
        path = write_result(rname.split("/")[-1], record, profile=profile, seeds=seeds, command=command,
                            wall_time_s=wall, directory=directory)
        record["path"] = str(path)
        if verbose:
            print(f"[{name}] wrote {path} ({wall:.0f}s)", flush=True)
    return record


def _field(cfg, key: str):
    """The value of a (dotted) configuration key in ``cfg``, as the run used it."""
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _literal(value):
    """``value`` as plain Python literals (dataclasses as dicts), so its ``repr`` parses back with ``--set``."""
    if dataclasses.is_dataclass(value):
        return _literal(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {k: _literal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(_literal(v) for v in value)
    return value


def _same_metrics(a: dict, b: dict) -> list[str]:
    """Summary keys whose means differ between two records of the same run (beyond float rounding)."""
    sa, sb = a["summary"], b["summary"]
    return sorted(k for k in set(sa) | set(sb) if k not in sa or k not in sb or
                  not np.isclose(sa[k]["mean"], sb[k]["mean"], rtol=1e-5, atol=1e-7, equal_nan=True))


def smoke(selected=None, *, device: str | None = None, out=None, seeds=(0,), check_resume: bool = True,
          verbose: bool = True) -> dict:
    """Run every experiment's *gpu* code path end to end on tiny stand-ins (``cfg.smoke()``): the real-data
    loaders on fixture trees written in the official layouts (:func:`medvlp_lib.data.real.fixtures.write_all`,
    with ``MEDVLP_DATA`` pointing at them), the DataLoader, checkpoints in a run folder, evaluation and results
    writing -- then, with ``check_resume``, the same run again with ``resume=True``, which must load the finished
    checkpoints and give the same metrics.

    ``out``: a folder for the fixtures, runs, caches and results (default: a new temporary folder); nothing is
    written to ``results/``. Returns ``{"device", "out", "experiments": {name: {"ok", "seconds", "error"?,
    "resume_mismatch"?}}}``; an experiment that fails is recorded, not raised, so one report covers all.
    """
    import tempfile
    import traceback

    from ..data.real.fixtures import write_all

    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="medvlp-smoke-"))
    out.mkdir(parents=True, exist_ok=True)
    data_root = out / "data"
    if not data_root.exists():
        write_all(data_root)
    report = {"device": device or "auto", "out": str(out), "experiments": {}}
    with environ(MEDVLP_DATA=str(data_root), MEDVLP_CACHE=str(out / "cache")):
        for name in selected or names():
            t0 = time.time()
            entry: dict = {"ok": False}
            try:
                kw = dict(profile="gpu", seeds=seeds, smoke=True, run_dir=out / "runs", device=device, ckpt_every=10_000,
                          verbose=False)
                first = run(name, directory=out / "results", **kw)
                if check_resume:
                    again = run(name, directory=out / "results_resumed", resume=True, **kw)
                    diff = _same_metrics(first, again)
                    if diff:
                        entry["resume_mismatch"] = diff[:10]
                entry["ok"] = not entry.get("resume_mismatch")
            except Exception as err:  # noqa: BLE001 -- one report for every experiment
                entry["error"] = f"{type(err).__name__}: {err}"
                entry["traceback"] = traceback.format_exc(limit=8)
            entry["seconds"] = round(time.time() - t0, 2)
            report["experiments"][name] = entry
            if verbose:
                status = "ok" if entry["ok"] else ("resume differs" if "resume_mismatch" in entry else "FAILED")
                print(f"[smoke] {name:<24} {status:<15} {entry['seconds']:7.1f} s"
                      + (f"  {entry['error']}" if "error" in entry else ""), flush=True)
    return report


def load(name: str, profile: str = "cpu") -> dict:
    """Read the results file of experiment ``name`` for ``profile`` (:func:`results_directory`)."""
    if profile == "fast":
        return read_result(f"{name}__fast", directory=results_directory("fast"))
    rec = read_result(name, directory=results_directory(profile))
    if rec.get("profile") != profile:
        raise ValueError(f"{results_directory(profile) / name}.json holds profile {rec.get('profile')!r}, not "
                         f"{profile!r}")
    return rec


def summary_table(record: dict, keys=None):
    """A pandas DataFrame ``metric | mean | std | n`` from a run record."""
    import pandas as pd
    rows = [{"metric": k, "mean": v["mean"], "std": v["std"], "n": v["n"]}
            for k, v in record["summary"].items() if keys is None or k in keys]
    return pd.DataFrame(rows).set_index("metric") if rows else pd.DataFrame(columns=["mean", "std", "n"])


def variant_table(record: dict, metrics, variants=None, scale: float = 100.0, digits: int = 1):
    """A pandas DataFrame ``variant x metric`` of ``"mean ± std"`` strings from an ablation record whose
    summary keys are ``<variant>/<metric>`` (e.g. ``ab_0.3_0.7/zero_shot_auc``); variants in run order."""
    import pandas as pd
    if variants is None:
        first = next(iter(record["per_seed"].values()))
        variants = list(first)
    missing = [f"{v}/{m}" for v in variants for m in metrics if f"{v}/{m}" not in record["summary"]]
    if missing:
        raise KeyError(f"{record.get('experiment', 'record')} has no summary entries {missing[:3]}...")
    return pd.DataFrame({m: {v: fmt(record["summary"][f"{v}/{m}"], scale, digits) for v in variants}
                         for m in metrics})


def binned_curve(history, key: str = "loss", points: int = 60) -> list[float]:
    """A training curve small enough for a results file: the trainer's per-step ``history`` values of ``key``
    averaged in ``points`` equal bins (returned unbinned when there are at most ``points`` steps)."""
    vals = np.array([h[key] for h in history if key in h], dtype=float)
    if len(vals) <= points:
        return vals.tolist()
    edges = np.linspace(0, len(vals), points + 1).astype(int)
    return [float(vals[a:b].mean()) for a, b in zip(edges[:-1], edges[1:])]


def late_mean(record: dict, key: str, curve: str, frac: float = 0.2) -> float:
    """Mean over seeds of the last ``frac`` of training curve ``curve`` of result entry ``key`` (a method or an
    ablation variant whose per-seed metrics hold ``curves[curve]``, e.g. ``uni_share``)."""
    vals = []
    for per in record["per_seed"].values():
        c = per[key]["curves"][curve]
        vals.append(float(np.mean(c[-max(1, int(len(c) * frac)):])))
    return float(np.mean(vals))
