"""Re-run every cpu-profile experiment at one clean commit (the verdict protocol's re-run), resumable.

    python tools/rerun_cpu.py [--jobs 2] [--only NAME ...] [--dry-run]

Refuses a dirty work tree (a results file must name a clean commit). Runs each experiment with its cpu seeds,
``--run-dir runs/cpu-<commit>`` and ``--resume``, so a session that ends mid-way loses at most ``ckpt_every``
steps per model: run the same command again, at the same commit (e.g. in a worktree checked out there), and it
continues. Experiments whose ``results/<name>.json`` already comes from this commit with the cpu seeds are
skipped. The order is by the wall time of the committed results file (shortest first, unknown last), so
finished files can be committed as early as possible.

``MEDVLP_RESULTS`` sends the results files to another folder, which keeps the work tree clean while the re-run
writes them (copy them into ``results/`` of the branch that commits them).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    """git's stdout, not stripped: ``status --porcelain`` lines start with a status column that may be a space."""
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def dirty_lines(porcelain: str) -> list[str]:
    """Tracked changes outside ``results/`` in ``git status --porcelain`` output (``XY path`` lines)."""
    return [line for line in porcelain.splitlines() if line.strip() and not line[3:].startswith("results/")]


def done_at(name: str, commit: str, seeds, results: Path) -> bool:
    path = results / f"{name}.json"
    if not path.is_file():
        return False
    rec = json.loads(path.read_text())
    return rec.get("commit") == commit and set(map(int, rec.get("seeds", []))) >= set(seeds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from medvlp_lib import experiments

    from medvlp_lib.utils import results_dir

    results = results_dir()          # MEDVLP_RESULTS, or the repository's results/
    commit = _git("rev-parse", "HEAD").strip()
    dirty = dirty_lines(_git("status", "--porcelain", "--untracked-files=no"))
    if dirty and not args.dry_run:
        print("refusing to run: the work tree has uncommitted changes (a results file must name a clean commit):\n  "
              + "\n  ".join(dirty), file=sys.stderr)
        return 2
    names = args.only or experiments.names()
    plan = []
    for name in names:
        exp = experiments.get(name)
        seeds = exp.seeds["cpu"]
        if done_at(name, commit, seeds, results):
            print(f"[rerun] {name:<24} done at {commit[:10]}")
            continue
        plan.append((name, seeds))
    def old_wall(item):
        path = results / f"{item[0]}.json"
        return json.loads(path.read_text()).get("wall_time_s", float("inf")) if path.is_file() else float("inf")
    plan.sort(key=old_wall)
    print(f"[rerun] {len(plan)} experiment(s) to run at {commit[:10]}: {', '.join(n for n, _ in plan)}")
    if args.dry_run:
        return 0
    for name, seeds in plan:
        t0 = time.time()
        cmd = [sys.executable, "-m", "medvlp_lib.experiments", "run", name, "--profile", "cpu", "--seeds",
               *map(str, seeds), "--jobs", str(args.jobs), "--run-dir", str(ROOT / "runs" / f"cpu-{commit[:10]}"),
               "--resume"]
        print("[rerun] " + " ".join(cmd[1:]), flush=True)
        rc = subprocess.run(cmd, cwd=ROOT).returncode
        print(f"[rerun] {name}: exit {rc} after {time.time() - t0:.0f}s", flush=True)
        if rc:
            return rc
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
