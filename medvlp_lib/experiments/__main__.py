"""``python -m medvlp_lib.experiments list [NAME ...] | run NAME --profile P --seeds ... [--set key=value ...] |
smoke [NAME ...] [--device cuda] [--bench]``.

``run`` options for long runs: ``--run-dir DIR`` (checkpoints per experiment / seed / model), ``--resume``
(continue from the newest good checkpoints), ``--ckpt-every N``, ``--device``; under ``torchrun`` the run is
data-parallel. ``smoke`` runs every experiment's gpu code path on tiny stand-ins and fixture trees
(:func:`medvlp_lib.experiments.smoke`); with ``--device cuda --bench`` it is the book's GPU check (also the
paper-size RFBE memory benchmark) and writes one results file, ``results/gpu/gpu_check.json``.

``--set`` values are parsed to the type of the configuration field they set (``--set epochs=3``,
``--set lr=1e-4``, ``--set 'batch_sizes=(16, 64)'``, ``--set proj=linear``, ``--set ssl.steps=50``); an unknown
key or a value of the wrong type is an error that names the key and the known keys.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
import time

from ..config import describe, field_type, parse_value, weights_of
from ..results import write_result
from . import PROFILES, get, names, results_directory, run, smoke


def parse_set(items, config_class, experiment: str = "") -> dict:
    """``["key=value", ...]`` -> ``{key: value}`` with each value parsed to its field's type in ``config_class``
    (:func:`medvlp_lib.config.parse_value`)."""
    out = {}
    where = f" for experiment {experiment!r}" if experiment else ""
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip()
        try:
            tp = field_type(config_class, key)
        except ValueError as err:
            raise ValueError(f"unknown --set key {key!r}{where}: {err}") from None
        out[key] = parse_value(text, tp, f"--set {key}")
    return out


def _wrapped(items: list[str], indent: int) -> str:
    """``items`` two spaces apart, wrapped at 120 columns between items (inside an item only when it is long)."""
    glue = "\x00"  # keeps a short item's own spaces from being line breaks
    text = "  ".join(i if len(i) > 60 else i.replace(" ", glue) for i in items) or "(same)"
    return textwrap.fill(text, width=120, initial_indent=" " * indent, subsequent_indent=" " * indent,
                         break_long_words=False, break_on_hyphens=False).replace(glue, " ")


def list_experiments(selected=None) -> str:
    """Each experiment, its configuration class and its profiles: ``cpu`` in full, ``fast`` and ``gpu`` as their
    differences from ``cpu``."""
    lines = []
    for n in selected or names():
        exp = get(n)
        lines.append(textwrap.fill(f"{n}  [{exp.config_class.__name__}]  {exp.description}", width=120,
                                   subsequent_indent=" " * 4, break_long_words=False))
        cpu = exp.profiles["cpu"]
        for p in ("cpu", *[q for q in PROFILES if q != "cpu"]):
            cfg = exp.profiles[p]
            head = f"    {p:<4}  seeds {list(exp.seeds[p])}" + ("" if p == "cpu" else ", differs from cpu in:")
            lines.append(head)
            sources = [f"data {cfg.data}"] + [f"{src}:{name}" for _, src, name in weights_of(cfg)]
            lines.append(_wrapped(["sources: " + ", ".join(sources)], 10))
            lines.append(_wrapped(describe(cfg, None if p == "cpu" else cpu, sep=None), 10))
        lines.append("")
    return "\n".join(lines)


def gpu_check(selected=None, device: str = "cuda", bench: bool = True, out=None, write: bool = True) -> dict:
    """The book's GPU check: every experiment's gpu path as a smoke run on ``device`` plus (``bench``) the RFBE
    memory benchmark at the paper's architecture (Swin-Tiny + a BERT-base-shaped text encoder, 224 px, queue
    4,096; weights need not be present: memory depends on the architecture). Writes ``results/gpu/gpu_check.json``
    (``write``) and returns the record."""
    t0 = time.time()
    report = smoke(selected, device=device, out=out)
    if bench:
        from ..eval.efficiency import rfbe_benchmark

        try:
            report["rfbe_paper_memory"] = rfbe_benchmark((32, 128, 512), steps=2, repeats=1, min_samples=1, size=224,
                                                         device=device, arch="paper-shape", progress=False)
        except Exception as err:  # noqa: BLE001 -- reported in the record
            report["rfbe_paper_memory"] = {"error": f"{type(err).__name__}: {err}"}
    report["ok"] = all(e["ok"] for e in report["experiments"].values()) and "error" not in report.get(
        "rfbe_paper_memory", {})
    if write:
        path = write_result("gpu_check", report, profile="gpu", seeds=(0,), wall_time_s=time.time() - t0,
                            directory=results_directory("gpu"))
        print(f"[gpu check] wrote {path}", flush=True)
    return report


def main(argv=None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the trainer's steps / ETA lines
    parser = argparse.ArgumentParser(prog="python -m medvlp_lib.experiments")
    sub = parser.add_subparsers(dest="cmd", required=True)
    lst = sub.add_parser("list", help="list named experiments, their data sources, weights and configurations")
    lst.add_argument("names", nargs="*", help="only these experiments")
    r = sub.add_parser("run", help="run a named experiment")
    r.add_argument("name")
    r.add_argument("--profile", default="fast", choices=PROFILES)
    r.add_argument("--seeds", type=int, nargs="*", default=None)
    r.add_argument("--jobs", type=int, default=1, help="run seeds in this many processes (one thread each)")
    r.add_argument("--set", nargs="*", default=None, metavar="KEY=VALUE",
                   help="override configuration fields (values parsed to the field's type)")
    r.add_argument("--run-dir", default=None, help="checkpoint folder: <run-dir>/<experiment>/seed<k>/<model>")
    r.add_argument("--resume", action="store_true", help="continue every training from its newest good checkpoint")
    r.add_argument("--ckpt-every", type=int, default=500, help="checkpoint every N steps (with --run-dir)")
    r.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: the best available)")
    r.add_argument("--smoke", action="store_true", help="the gpu path on tiny stand-ins (needs --out)")
    r.add_argument("--out", default=None, help="results folder (default: results/, results/gpu/, results/tmp/)")
    sm = sub.add_parser("smoke", help="every experiment's gpu path on tiny stand-ins and fixture trees")
    sm.add_argument("names", nargs="*", help="only these experiments")
    sm.add_argument("--device", default=None, help="cpu or cuda (default: the best available)")
    sm.add_argument("--out", default=None, help="folder for fixtures, runs and results (default: a temp folder)")
    sm.add_argument("--bench", action="store_true", help="also the RFBE memory benchmark at the paper's size and "
                                                         "write results/gpu/gpu_check.json (the GPU check)")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "list":
            print(list_experiments(args.names))
            return 0
        if args.cmd == "smoke":
            for n in args.names:
                get(n)
            if args.bench:
                report = gpu_check(args.names, device=args.device or "cuda", out=args.out)
            else:
                report = smoke(args.names, device=args.device, out=args.out)
            bad = [n for n, e in report["experiments"].items() if not e["ok"]]
            print(json.dumps({n: report["experiments"][n].get("error", "resume differs") for n in bad}, indent=1)
                  if bad else "[smoke] every experiment's gpu path ran")
            return 1 if bad or not report.get("ok", True) else 0
        exp = get(args.name)
        overrides = parse_set(args.set, exp.config_class, exp.name)
        exp.config(args.profile, overrides)  # check every override before anything runs
        if args.smoke and args.out is None:
            raise ValueError("--smoke needs --out DIR: a smoke result never lands in results/")
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    run(args.name, args.profile, args.seeds, overrides, jobs=args.jobs, run_dir=args.run_dir, resume=args.resume,
        ckpt_every=args.ckpt_every, device=args.device, smoke=args.smoke, directory=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
