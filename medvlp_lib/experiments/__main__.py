"""``python -m medvlp_lib.experiments list | run NAME --profile P --seeds ... [--set key=value ...]``."""
from __future__ import annotations

import argparse
import ast
import os
import sys

from . import get, names, run


def _parse_set(items):
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def main(argv=None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = argparse.ArgumentParser(prog="python -m medvlp_lib.experiments")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list named experiments")
    r = sub.add_parser("run", help="run a named experiment")
    r.add_argument("name")
    r.add_argument("--profile", default="fast", choices=("fast", "cpu", "gpu"))
    r.add_argument("--seeds", type=int, nargs="*", default=None)
    r.add_argument("--jobs", type=int, default=1, help="run seeds in this many processes (one thread each)")
    r.add_argument("--set", nargs="*", default=None, metavar="KEY=VALUE", help="override config entries")
    args = parser.parse_args(argv)
    if args.cmd == "list":
        for n in names():
            exp = get(n)
            print(f"{n:<28} {exp.description}")
            for p, cfg in exp.profiles.items():
                print(f"    {p:<5} seeds={list(exp.seeds[p])} {cfg}")
        return 0
    run(args.name, args.profile, args.seeds, _parse_set(args.set), jobs=args.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
