"""Execute the book's notebooks and build the HTML book: the one runner behind `make book` and the tests.

Source of truth for every chapter is its jupytext MyST-markdown file ``notebooks/NN_name.md`` (no
outputs). The paired ``notebooks/NN_name.ipynb`` exists for Colab and must stay in sync (``sync`` writes
it, ``check-sync`` verifies it; a test runs the check). ``execute`` runs each source with papermill,
injecting ``PROFILE`` (and any extra parameters) into its ``parameters`` cell, and writes the executed
copy to ``_build/executed/notebooks/``. ``build-html`` stages the prose pages, the configuration and the
executed notebooks in ``_build/stage`` and runs Jupyter Book 1.x on them with execution switched off, so
every notebook is executed exactly once per build.

Command line::

    python -m medvlp_lib.notebooks execute --profile fast [--notebooks 01_data_and_clip_baseline ...]
    python -m medvlp_lib.notebooks build-html
    python -m medvlp_lib.notebooks sync | check-sync
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .utils import project_root

__all__ = ["notebook_sources", "sync", "check_sync", "execute_notebook", "execute_all", "build_html"]

BUILD = "_build"
EXECUTED = Path(BUILD) / "executed" / "notebooks"
STAGE = Path(BUILD) / "stage"
PROFILES = ("fast", "cpu", "gpu")


def _root(root: str | Path | None) -> Path:
    return Path(root) if root is not None else project_root()


def notebook_sources(root: str | Path | None = None, names=None) -> list[Path]:
    """The jupytext sources ``notebooks/*.md`` in chapter order, optionally filtered by stem."""
    nb_dir = _root(root) / "notebooks"
    if not nb_dir.is_dir():
        raise FileNotFoundError(f"notebook folder {nb_dir} does not exist (expected notebooks/NN_name.md files)")
    found = sorted(p for p in nb_dir.glob("[0-9][0-9]_*.md"))
    if names and names != ["all"]:
        by_stem = {p.stem: p for p in found}
        missing = [n for n in names if n not in by_stem]
        if missing:
            raise ValueError(f"unknown notebook(s) {missing}; available: {sorted(by_stem)}")
        found = [by_stem[n] for n in names]
    return found


def _read(path: Path):
    import jupytext
    return jupytext.read(path)


def _cells_signature(nb) -> list[tuple[str, str, tuple]]:
    return [(c.cell_type, c.source.strip(), tuple(c.get("metadata", {}).get("tags", []))) for c in nb.cells]


def sync(root: str | Path | None = None) -> list[Path]:
    """Write the paired ``.ipynb`` (without outputs) for every source; returns the files written."""
    import jupytext
    written = []
    import hashlib
    for src in notebook_sources(root):
        nb = _read(src)
        dst = src.with_suffix(".ipynb")
        if dst.exists() and not _pair_problems(src, dst, nb):
            continue  # already in sync: leave the file (and its cell ids) untouched
        nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
        for i, cell in enumerate(nb.cells):  # stable ids: re-syncing does not churn unchanged cells
            cell["id"] = hashlib.sha1(f"{i}:{cell.cell_type}:{cell.source}".encode()).hexdigest()[:8]
        jupytext.write(nb, dst, fmt="ipynb")
        written.append(dst)
    return written


def _pair_problems(src: Path, dst: Path, nb=None) -> list[str]:
    import nbformat
    paired = nbformat.read(dst, as_version=4)
    problems = []
    if _cells_signature(nb if nb is not None else _read(src)) != _cells_signature(paired):
        problems.append(f"{dst} differs from {src.name} (run `make sync`)")
    if any(c.get("outputs") for c in paired.cells if c.cell_type == "code"):
        problems.append(f"{dst} contains outputs; commit it without outputs (run `make sync`)")
    return problems


def check_sync(root: str | Path | None = None) -> list[str]:
    """Return a list of problems (missing or out-of-sync ``.ipynb`` pairs); empty means in sync."""
    import nbformat
    problems = []
    for src in notebook_sources(root):
        dst = src.with_suffix(".ipynb")
        if not dst.exists():
            problems.append(f"{dst} is missing (run `make sync`)")
            continue
        problems.extend(_pair_problems(src, dst))
    return problems


INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
#: environment of the kernels that execute the book (unless the variable is already set)
KERNEL_ENV = {"TQDM_MININTERVAL": "60", "PYTHONWARNINGS": "ignore:IProgress not found"}


def execute_notebook(src: str | Path, dst: str | Path, parameters: dict | None = None,
                     timeout: int = 1800, log_output: bool = False) -> float:
    """Execute one jupytext source with papermill into ``dst``; returns wall seconds.

    Raises ``papermill.PapermillExecutionError`` (the first failing cell, with its traceback) if any
    cell fails, so a crashing notebook fails the build.
    """
    import papermill as pm
    src, dst = Path(src), Path(dst)
    nb = _read(src)
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells):
        raise ValueError(f"{src} has no cell tagged 'parameters' (every chapter needs one with PROFILE)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    # the kernel inherits this process' environment: a headless MPLBACKEND (Agg, set for the tests) would
    # make every figure invisible in the executed notebook, so kernels always get the inline backend. Progress
    # bars stay on, but in a stored notebook every redraw is kept as text: KERNEL_ENV makes tqdm redraw at
    # most every 60 s (so a bar is stored as its first and last state) and drops tqdm's "IProgress not found"
    # notice; a reader's own Jupyter session keeps live bars.
    env = {"MPLBACKEND": INLINE_BACKEND, **{k: v for k, v in KERNEL_ENV.items() if k not in os.environ}}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(nb, str(dst), parameters=parameters or {}, cwd=str(src.parent),
                            kernel_name="python3", progress_bar=False, log_output=log_output,
                            execution_timeout=timeout, report_mode=False)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return time.perf_counter() - t0


def _execute_job(src: str, dst: str, parameters: dict) -> float:
    return execute_notebook(src, dst, parameters)


def execute_all(profile: str = "fast", names=None, root: str | Path | None = None,
                extra: dict | None = None, jobs: int = 1) -> dict[str, float]:
    """Execute every chapter in ``profile``; prints a timing table; raises if any notebook failed.

    ``jobs > 1`` runs that many notebooks at once, each kernel limited to one intra-op thread
    (``OMP_NUM_THREADS=1`` unless already set): on a 2-core machine two single-threaded kernels finish the
    book sooner than one kernel using both cores, because the book's small models scale poorly across threads.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    root = _root(root)
    out_dir = root / EXECUTED
    timings, failures = {}, {}
    sources = notebook_sources(root, names)
    params = {"PROFILE": profile, **(extra or {})}
    if jobs > 1:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            if not os.environ.get(var):
                os.environ[var] = "1"
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {}
        for src in sources:
            print(f"[execute] {src.name} (PROFILE={profile}) ...", flush=True)
            futures[pool.submit(_execute_job, str(src), str(out_dir / f"{src.stem}.ipynb"), params)] = src
        for fut in concurrent.futures.as_completed(futures):
            src = futures[fut]
            try:
                timings[src.stem] = fut.result()
                print(f"[execute] {src.name} ok in {timings[src.stem]:.1f}s", flush=True)
            except Exception as exc:  # report every failure, then fail the build
                failures[src.stem] = f"{type(exc).__name__}: {str(exc)[-2000:]}"
                print(f"[execute] {src.name} FAILED\n{failures[src.stem]}", flush=True)
    timings = {s.stem: timings[s.stem] for s in sources if s.stem in timings}
    (root / BUILD).mkdir(exist_ok=True)
    (root / BUILD / "execution_times.json").write_text(json.dumps({"profile": profile, "jobs": jobs,
                                                                   "seconds": timings, "failures": failures},
                                                                  indent=1))
    print("\nnotebook                                   seconds")
    for k, v in timings.items():
        print(f"{k:<42} {v:8.1f}")
    if failures:
        raise RuntimeError(f"{len(failures)} notebook(s) failed: {sorted(failures)}")
    return timings


def build_html(root: str | Path | None = None, strict: bool = True) -> Path:
    """Stage prose + executed notebooks and run ``jupyter-book build``; returns ``_build/html/index.html``."""
    root = _root(root)
    stage = root / STAGE
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(root / name, stage / name)
    shutil.copytree(root / "book", stage / "book")
    executed = root / EXECUTED
    expected = [p.stem for p in notebook_sources(root)]
    missing = [s for s in expected if not (executed / f"{s}.ipynb").exists()]
    if missing:
        raise FileNotFoundError(f"executed notebooks missing in {executed}: {missing} (run `make execute`)")
    (stage / "notebooks").mkdir()
    for stem in expected:
        shutil.copy2(executed / f"{stem}.ipynb", stage / "notebooks" / f"{stem}.ipynb")
    for extra in ("results",):
        if (root / extra).is_dir():
            shutil.copytree(root / extra, stage / extra)
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(stage), "--path-output", str(root),
           "--builder", "html"]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    print("[html]", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=root)
    index = root / BUILD / "html" / "index.html"
    if not index.exists():
        raise FileNotFoundError(f"{index} was not produced by jupyter-book")
    return index


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medvlp_lib.notebooks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("execute", help="execute notebooks with papermill into _build/executed")
    ex.add_argument("--profile", default="fast", choices=PROFILES)
    ex.add_argument("--notebooks", nargs="*", default=["all"], help="stems like 01_data_and_clip_baseline")
    ex.add_argument("--jobs", type=int, default=1, help="notebooks executed at once (one thread each when > 1)")
    sub.add_parser("build-html", help="build the HTML book from the executed notebooks")
    sub.add_parser("sync", help="write paired .ipynb files from the jupytext sources")
    sub.add_parser("check-sync", help="fail if a paired .ipynb is missing or out of sync")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.cmd == "execute":
        names = args.notebooks if args.notebooks else ["all"]
        if len(names) == 1 and names[0] == "all":
            names = None
        execute_all(args.profile, names, jobs=args.jobs)
    elif args.cmd == "build-html":
        print(build_html())
    elif args.cmd == "sync":
        for p in sync():
            print("wrote", p)
    elif args.cmd == "check-sync":
        problems = check_sync()
        for p in problems:
            print(p)
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
