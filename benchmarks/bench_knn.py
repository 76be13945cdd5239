"""Benchmark: exact k-NN patch graph and per-slide MoMKD inference vs number of patches (one CPU core).

Every measurement runs in a fresh subprocess so that its peak resident memory (``ru_maxrss``, the whole
process including the Python/torch runtime) is its own. Columns:

* ``knn``: ``medvlp_lib.models.wsi.knn_graph(coords, k=8)`` on a simulated slide's level-0 coordinates
  (best of ``repeats`` runs), target < 5 s and < 2 GB at 100,000 patches;
* ``inference``: k-NN graph + ``MoMKD.predict`` (GATv2 encoder, memory-guided pooling, classifier) on one
  slide of ``--dim``-dimensional patch features.

    python -m benchmarks.bench_knn            # 1k .. 100k patches
    python -m benchmarks.bench_knn --quick    # a few seconds per size, 1k / 10k / 100k (k-NN), 1k / 10k (inference)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def _child(kind: str, n: int, dim: int, k: int, repeats: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from medvlp_lib.data.pathology import CohortConfig, simulate_slide
    from medvlp_lib.models.wsi import knn_graph

    slide = simulate_slide(CohortConfig(feature_dim=dim if kind == "infer" else 2), label=1, n_patches=n, seed=0)
    coords = slide.coords
    if kind == "knn":
        del slide
        base = _rss_mb()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            e = knn_graph(coords, k)
            times.append(time.perf_counter() - t)
        return {"n_patches": n, "seconds": min(times), "edges": int(e.shape[1]), "rss_before_mb": base,
                "peak_rss_mb": _peak_mb()}
    from medvlp_lib.methods.momkd import MoMKD

    torch.manual_seed(0)
    model = MoMKD(dim, 0, align_omics=False, recon=False).eval()
    warm = simulate_slide(CohortConfig(feature_dim=dim), label=0, n_patches=100, seed=1)
    model.predict(warm)
    feats = torch.from_numpy(slide.features)
    del slide
    base = _rss_mb()
    t0 = time.perf_counter()
    e = knn_graph(coords, k)
    t1 = time.perf_counter()
    out = model.predict({"features": feats, "edge_index": e})
    t2 = time.perf_counter()
    assert out["attention"].shape[0] == n
    return {"n_patches": n, "dim": dim, "graph_s": t1 - t0, "predict_s": t2 - t1, "total_s": t2 - t0,
            "rss_before_mb": base, "peak_rss_mb": _peak_mb()}


def _run_child(kind: str, n: int, dim: int, k: int, repeats: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_knn", "--child", kind, str(n), "--dim", str(dim), "--k", str(k),
           "--repeats", str(repeats)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if proc.returncode != 0:
        return {"n_patches": n, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few sizes, seconds-long run")
    ap.add_argument("--dim", type=int, default=128, help="patch feature dimension for inference (1536 = UNI v2)")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help="do not write results/bench_knn.json")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child[0], int(args.child[1]), args.dim, args.k, args.repeats)))
        return {}

    from tqdm.auto import tqdm

    knn_sizes = [1_000, 10_000, 100_000] if args.quick else [1_000, 5_000, 10_000, 20_000, 50_000, 100_000]
    inf_sizes = [1_000, 10_000] if args.quick else [1_000, 5_000, 10_000, 20_000, 50_000, 100_000]
    knn_rows = [_run_child("knn", n, args.dim, args.k, 1 if args.quick else args.repeats)
                for n in tqdm(knn_sizes, desc="k-NN graph")]
    inf_rows = [_run_child("infer", n, args.dim, args.k, 1) for n in tqdm(inf_sizes, desc="inference")]

    print(f"\nk-NN graph (k={args.k}, exact, one core; peak RSS = whole child process)")
    print(f"{'patches':>9} {'seconds':>9} {'edges':>10} {'peak RSS MB':>12}")
    for r in knn_rows:
        if "error" in r:
            print(f"{r['n_patches']:>9} error: {r['error']}")
        else:
            print(f"{r['n_patches']:>9} {r['seconds']:>9.3f} {r['edges']:>10} {r['peak_rss_mb']:>12.0f}")
    print(f"\nper-slide MoMKD inference (d={args.dim}, graph + GATv2 + memory pooling, one core)")
    print(f"{'patches':>9} {'graph s':>9} {'predict s':>10} {'total s':>9} {'peak RSS MB':>12}")
    for r in inf_rows:
        if "error" in r:
            print(f"{r['n_patches']:>9} error: {r['error']}")
        else:
            print(f"{r['n_patches']:>9} {r['graph_s']:>9.3f} {r['predict_s']:>10.3f} {r['total_s']:>9.3f} "
                  f"{r['peak_rss_mb']:>12.0f}")
    big = [r for r in knn_rows if r.get("n_patches") == 100_000 and "error" not in r]
    payload = {"k": args.k, "dim": args.dim, "threads": 1, "quick": args.quick, "knn": knn_rows,
               "inference": inf_rows,
               "target_100k": {"seconds_lt": 5.0, "peak_rss_mb_lt": 2048,
                               "met": bool(big) and big[0]["seconds"] < 5.0 and big[0]["peak_rss_mb"] < 2048}}
    if not args.no_write:
        from medvlp_lib.results import write_result

        path = write_result("bench_knn", payload, profile="quick" if args.quick else "full")
        print(f"\nwrote {path}")
    return payload


if __name__ == "__main__":
    main()
