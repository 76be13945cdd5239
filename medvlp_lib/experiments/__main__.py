"""``python -m medvlp_lib.experiments list [NAME ...] | run NAME --profile P --seeds ... [--set key=value ...]``.

``--set`` values are parsed to the type of the configuration field they set (``--set epochs=3``,
``--set lr=1e-4``, ``--set 'batch_sizes=(16, 64)'``, ``--set proj=linear``, ``--set ssl.steps=50``); an unknown
key or a value of the wrong type is an error that names the key and the known keys.
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap

from ..config import describe, field_type, parse_value
from . import PROFILES, get, names, run


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
            lines.append(_wrapped(describe(cfg, None if p == "cpu" else cpu, sep=None), 10))
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = argparse.ArgumentParser(prog="python -m medvlp_lib.experiments")
    sub = parser.add_subparsers(dest="cmd", required=True)
    lst = sub.add_parser("list", help="list named experiments and their configurations")
    lst.add_argument("names", nargs="*", help="only these experiments")
    r = sub.add_parser("run", help="run a named experiment")
    r.add_argument("name")
    r.add_argument("--profile", default="fast", choices=PROFILES)
    r.add_argument("--seeds", type=int, nargs="*", default=None)
    r.add_argument("--jobs", type=int, default=1, help="run seeds in this many processes (one thread each)")
    r.add_argument("--set", nargs="*", default=None, metavar="KEY=VALUE",
                   help="override configuration fields (values parsed to the field's type)")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "list":
            print(list_experiments(args.names))
            return 0
        exp = get(args.name)
        overrides = parse_set(args.set, exp.config_class, exp.name)
        exp.config(args.profile, overrides)  # check every override before anything runs
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    run(args.name, args.profile, args.seeds, overrides, jobs=args.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
