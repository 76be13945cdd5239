"""Named experiments with profiles and seeds, runnable from the command line and from notebooks.

An experiment is a function ``fn(cfg: dict, seed: int) -> dict`` of metrics (nested dicts of numbers
are flattened to ``"a/b"`` keys). Each experiment declares its configuration per profile:

* ``fast`` — what CI and the book build execute (seconds to a couple of minutes on CPU);
* ``cpu``  — a laptop run large enough for the paper's effect, if it exists, to show above seed noise;
  its results are committed under ``results/`` and discussed in the prose and the claims ledger;
* ``gpu``  — the papers' own scale.

``run(name, profile, seeds)`` runs every seed, aggregates mean +/- std per metric and writes
``results/<name>.json`` (``cpu``/``gpu``) or ``results/tmp/<name>__fast.json`` (``fast``, not committed),
with the command that regenerates it, the commit, the seeds and the wall time.

Command line::

    python -m medvlp_lib.experiments list
    python -m medvlp_lib.experiments run clip_batch_size --profile cpu --seeds 0 1 2
"""
from __future__ import annotations

import copy
import importlib
import shlex
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..results import fmt, read_result, summary_entry, write_result
from ..utils import check_seed, results_dir

__all__ = ["Experiment", "register", "get", "names", "run", "load", "summary_table", "flatten", "claim_evaluators",
           "variant_table", "late_mean", "binned_curve"]

PROFILES = ("fast", "cpu", "gpu")
_REGISTRY: dict[str, "Experiment"] = {}
# every module in this package defines experiments; they are imported lazily so `list` sees everything
# (a chapter adds its experiments by adding a module here, without touching this file)


def _modules() -> list[str]:
    import pkgutil
    return [f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]


@dataclass
class Experiment:
    name: str
    fn: Callable[[dict, int], dict]
    profiles: dict[str, dict]
    seeds: dict[str, tuple[int, ...]] = field(default_factory=lambda: {"fast": (0,), "cpu": (0, 1, 2), "gpu": (0, 1, 2)})
    description: str = ""

    def config(self, profile: str, overrides: dict | None = None) -> dict:
        if profile not in self.profiles:
            raise ValueError(f"experiment {self.name!r} has no profile {profile!r}; it has {sorted(self.profiles)}")
        cfg = copy.deepcopy(self.profiles[profile])
        for key, value in (overrides or {}).items():
            if key not in cfg:
                raise ValueError(f"unknown override {key!r} for experiment {self.name!r}; known keys: {sorted(cfg)}")
            cfg[key] = value
        return cfg


def register(name: str, profiles: dict[str, dict], seeds: dict | None = None, description: str = ""):
    """Decorator registering ``fn(cfg, seed) -> metrics`` under ``name``."""
    missing = [p for p in PROFILES if p not in profiles]
    if missing:
        raise ValueError(f"experiment {name!r} must define every profile; missing {missing}")

    def deco(fn):
        exp = Experiment(name, fn, profiles, description=description or (fn.__doc__ or "").strip().split("\n")[0])
        if seeds:
            exp.seeds = {**exp.seeds, **seeds}
        _REGISTRY[name] = exp
        return fn
    return deco


def _load_all():
    for mod in _modules():
        importlib.import_module(mod)


def claim_evaluators() -> dict:
    """Claim id -> evaluator contributed by experiment modules through a module-level ``CLAIMS`` dict.

    Each chapter's experiment module owns the functions that turn its results into ledger verdicts
    (``CLAIMS = {"msd-vs-mmmoco": fn}``, ``fn(record) -> (ours, verdict, explanation)``), so the ledger
    itself (``medvlp_lib.ledger``) only lists the claims.
    """
    out = {}
    for mod in _modules():
        for cid, fn in getattr(importlib.import_module(mod), "CLAIMS", {}).items():
            if cid in out:
                raise ValueError(f"claim {cid!r} has evaluators in two experiment modules")
            out[cid] = fn
    return out


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
        vals = [flat[s][key] for s in flat if key in flat[s] and np.isfinite(flat[s][key])]
        if not vals:
            continue
        summary[key] = summary_entry(vals)
    return summary


def result_name(name: str, profile: str) -> str:
    return name if profile != "fast" else f"tmp/{name}__fast"


def _seed_worker(name: str, cfg: dict, seed: int) -> dict:
    """One seed in a worker process (one thread, so parallel seeds do not fight over the cores)."""
    import torch
    torch.set_num_threads(1)
    return get(name).fn(cfg, seed)


def run(name: str, profile: str = "fast", seeds=None, overrides: dict | None = None, write: bool = True,
        verbose: bool = True, jobs: int = 1) -> dict:
    """Run a named experiment for every seed and (optionally) write its results file; returns the record.

    ``jobs > 1`` runs seeds in that many worker processes, one thread each; every seed is seeded on its own,
    so the metrics do not depend on ``jobs`` beyond float summation order across thread counts.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    exp = get(name)
    cfg = exp.config(profile, overrides)
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
            futures = {seed: pool.submit(_seed_worker, name, copy.deepcopy(cfg), seed) for seed in seeds}
            per_seed = {seed: fut.result() for seed, fut in futures.items()}
    else:
        for seed in seeds:
            if verbose:
                print(f"[{name}] profile={profile} seed={seed}", flush=True)
            per_seed[seed] = exp.fn(copy.deepcopy(cfg), seed)
    wall = time.time() - t0
    record = {"experiment": name, "description": exp.description, "config": cfg,
              "per_seed": {str(s): m for s, m in per_seed.items()}, "summary": _summarise(per_seed)}
    command = "python -m medvlp_lib.experiments run {} --profile {} --seeds {}".format(
        name, profile, " ".join(map(str, seeds)))
    if int(jobs) > 1:
        command += f" --jobs {int(jobs)}"
    if overrides:
        command += " --set " + " ".join(shlex.quote(f"{k}={v!r}") for k, v in overrides.items())
    if write:
        rname = result_name(name, profile)
        directory = results_dir() / "tmp" if profile == "fast" else results_dir()
        path = write_result(rname.split("/")[-1], record, profile=profile, seeds=seeds, command=command,
                            wall_time_s=wall, directory=directory)
        record["path"] = str(path)
        if verbose:
            print(f"[{name}] wrote {path} ({wall:.0f}s)", flush=True)
    return record


def load(name: str, profile: str = "cpu") -> dict:
    """Read the results file of experiment ``name`` for ``profile``."""
    if profile == "fast":
        return read_result(f"{name}__fast", directory=results_dir() / "tmp")
    rec = read_result(name)
    if rec.get("profile") != profile:
        raise ValueError(f"results/{name}.json holds profile {rec.get('profile')!r}, not {profile!r}")
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
