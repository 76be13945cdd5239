"""The Colab simulation behind `make colab-check`: every paired ``.ipynb`` runs where only Colab's packages are.

    python tools/colab_check.py [--jobs 2] [--notebooks 01_data_and_clip_baseline ...] [--work _build/colab]

1. **A Colab base environment**, ``<work>/base``: a fresh venv holding only ``tools/colab-preinstalled.txt``
   (Colab's own package versions, from googlecolab/backend-info; torch from this machine's local files), and
   no ``medvlp_lib``. Kept between runs while that file is unchanged.
2. **The repository to clone**, ``<work>/medvlp.git``: a bare repository whose ``main`` is this checkout's
   commit, with its uncommitted changes to tracked files (``git stash create``; untracked files are not in it).
3. **Each chapter on its own machine**: a folder ``<work>/run/<stem>/`` holding only a copy of
   ``notebooks/<stem>.ipynb``, and a venv of its own layered on the base one (a ``.pth`` adds the base's
   site-packages), so what a chapter installs stays with it. The chapter runs under
   ``pytest --nbval-lax`` (nbval runs every cell of the committed notebook as a reader would and fails on any
   error) in a kernel of that venv, with ``MEDVLP_INSTALL`` naming the bare repository: the setup cell finds no
   ``medvlp_lib``, clones the repository into the folder and runs ``pip install -e medvlp[book]`` (pip fetches
   what Colab lacks from the package index), and every later cell runs on that install, in the committed
   ``PROFILE = "fast"``.

Writes ``<work>/times.json`` (seconds per chapter, setup and total) and each chapter's pytest log to
``<work>/run/<stem>/pytest.log``. Exit status 1 if any chapter failed.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PREINSTALLED = ROOT / "tools" / "colab-preinstalled.txt"
INLINE = "module://matplotlib_inline.backend_inline"
#: variables of this process that must not reach a simulated Colab kernel (they would find this checkout's
#: library, or change how the book's runner behaves)
DROP_ENV = ("PYTHONPATH", "VIRTUAL_ENV", "MPLBACKEND", "MEDVLP_BOOK_BUILD", "MEDVLP_RESULTS", "MEDVLP_INSTALL",
            "PYTHONWARNINGS", "TQDM_MININTERVAL", "JUPYTER_PATH", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV")


def log(msg: str) -> None:
    print(f"[colab] {msg}", flush=True)


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in DROP_ENV}


def run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], check=True, **{"env": clean_env(), **kw})


def _site_packages(venv: Path) -> Path:
    rel = Path(sysconfig.get_path("purelib", vars={"base": ".", "platbase": "."}))
    return venv / rel


def base_env(work: Path) -> Path:
    """The Colab base venv (created, or reused while ``colab-preinstalled.txt`` is unchanged)."""
    base = work / "base"
    stamp = base / ".colab-preinstalled.sha1"
    want = hashlib.sha1(PREINSTALLED.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == want and (base / "bin" / "python").exists():
        log(f"base environment {base} is current")
        return base
    if base.exists():
        shutil.rmtree(base)
    t0 = time.perf_counter()
    log(f"creating the base environment {base} from {PREINSTALLED.name} (torch from local files: a few minutes)")
    run([sys.executable, "-m", "venv", base])
    run([base / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-input", "-r", PREINSTALLED])
    check = subprocess.run([base / "bin" / "python", "-c", "import importlib.util as u; "
                            "print(u.find_spec('medvlp_lib') is None)"], capture_output=True, text=True,
                           env=clean_env(), cwd=work)
    if check.stdout.strip() != "True":
        raise RuntimeError("the Colab base environment can import medvlp_lib; it must not")
    stamp.write_text(want)
    log(f"base environment ready in {time.perf_counter() - t0:.0f}s")
    return base


def snapshot_repo(work: Path) -> Path:
    """A bare repository whose ``main`` is this checkout as it is (tracked files)."""
    bare = work / "medvlp.git"
    if bare.exists():
        shutil.rmtree(bare)
    commit = subprocess.run(["git", "stash", "create"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    if commit:
        log("the working tree has uncommitted changes: the clone holds them (tracked files only)")
    else:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
    run(["git", "init", "--quiet", "--bare", "--initial-branch=main", bare])
    run(["git", "push", "--quiet", bare, f"{commit}:refs/heads/main"], cwd=ROOT)
    return bare


def chapter_env(base: Path, folder: Path, name: str, kernels: Path) -> Path:
    """A venv for one chapter on top of the base one, and a Jupyter kernel ``name`` that runs in it."""
    venv = folder / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    _site_packages(venv).joinpath("colab_base.pth").write_text(
        f"import site; site.addsitedir({str(_site_packages(base))!r})\n")
    spec = kernels / name
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(venv / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Colab simulation ({name})", "language": "python",
        "env": {"MPLBACKEND": INLINE}}, indent=1))
    return venv


def run_chapter(stem: str, work: Path, base: Path, bare: Path, kernels: Path, threads: int | None,
                timeout: int) -> dict:
    folder = work / "run" / stem
    folder.mkdir(parents=True)
    shutil.copy2(ROOT / "notebooks" / f"{stem}.ipynb", folder / f"{stem}.ipynb")
    kernel = f"colab-sim-{stem[:2]}"
    chapter_env(base, folder, kernel, kernels)
    env = clean_env()
    env.update({"MEDVLP_INSTALL": str(bare), "JUPYTER_PATH": str(kernels.parent)})
    if threads:
        env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    (folder / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    cmd = [sys.executable, "-m", "pytest", "-c", folder / "pytest.ini", "--rootdir", folder, "-q",
           "--nbval-lax", "--nbval-kernel-name", kernel, "--nbval-cell-timeout", str(timeout),
           folder / f"{stem}.ipynb"]
    t0 = time.perf_counter()
    with open(folder / "pytest.log", "w") as out:
        code = subprocess.run([str(c) for c in cmd], cwd=folder, env=env, stdout=out,
                              stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - t0
    tail = (folder / "pytest.log").read_text().strip().splitlines()[-1:] or [""]
    return {"stem": stem, "ok": code == 0, "seconds": round(seconds, 1), "summary": tail[0],
            "installed": (folder / "medvlp" / "pyproject.toml").exists()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notebooks", nargs="*", default=["all"], help="stems (default: every chapter)")
    parser.add_argument("--jobs", type=int, default=2, help="chapters run at once (one thread each when > 1)")
    parser.add_argument("--work", default=str(ROOT / "_build" / "colab"))
    parser.add_argument("--timeout", type=int, default=1800, help="seconds one cell may take")
    args = parser.parse_args(argv)
    work = Path(args.work).resolve()
    stems = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if args.notebooks and args.notebooks != ["all"]:
        unknown = sorted(set(args.notebooks) - set(stems))
        if unknown:
            raise SystemExit(f"unknown notebooks {unknown}; available: {stems}")
        stems = [s for s in stems if s in args.notebooks]
    t0 = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    base = base_env(work)
    bare = snapshot_repo(work)
    for old in ("run", "kernels"):
        shutil.rmtree(work / old, ignore_errors=True)
    kernels = work / "kernels" / "kernels"
    setup_s = time.perf_counter() - t0
    results = []
    threads = 1 if args.jobs > 1 else None
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(run_chapter, s, work, base, bare, kernels, threads, args.timeout): s for s in stems}
        for fut in concurrent.futures.as_completed(futures):
            try:
                r = fut.result()
            except Exception as exc:  # a chapter that could not even start fails, the others go on
                r = {"stem": futures[fut], "ok": False, "seconds": 0.0, "summary": repr(exc), "installed": False}
            results.append(r)
            log(f"{'ok  ' if r['ok'] else 'FAIL'} {r['stem']} in {r['seconds']:.0f}s: {r['summary']}"
                + ("" if r["installed"] else " (the setup cell did not clone the repository)"))
    results.sort(key=lambda r: r["stem"])
    total = time.perf_counter() - t0
    (work / "times.json").write_text(json.dumps({"jobs": args.jobs, "setup_s": round(setup_s, 1),
                                                 "total_s": round(total, 1), "chapters": results}, indent=1))
    failed = [r["stem"] for r in results if not r["ok"] or not r["installed"]]
    log(f"{len(results) - len(failed)} of {len(results)} chapters passed in {total:.0f}s "
        f"(setup {setup_s:.0f}s); logs in {work}/run/<stem>/pytest.log")
    for stem in failed:
        log(f"--- {stem}: last lines of its log")
        print("\n".join((work / "run" / stem / "pytest.log").read_text().splitlines()[-40:]), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
