"""Benchmark: resource-free batch enlargement (RFBE) vs naive end-to-end MSD training, one CPU core.

A command-line wrapper over :func:`medvlp_lib.eval.efficiency.rfbe_benchmark` (read its module docstring for what
is measured and how). For each effective batch (32, 64, 128, 256, 512) naive MSD training and RFBE (sub-batch 32,
views built per sub-batch) each run alone in a process for their peak memory, and together in one process, steps
alternating, for their time (process CPU time per sample on CPU, wall time on CUDA; at least ``--min-samples``
samples each); every measurement in ``--repeats`` processes, interleaved, and a row holds the medians. Model: a small dual encoder (a 3-layer GroupNorm CNN on 64 px single-channel images and a hashed-token
bag-of-words text tower, 128-d embeddings, queue 4,096), synthetic images and reports built just in time for each
step; nothing is downloaded.

Targets: RFBE's net peak memory at effective batch 512 within 1.25x of its peak at 32 (issue 3); RFBE's time per
sample within 1.05x of naive's where it does naive's work (batch = sub-batch) and below naive's above it (issue 14).
The load average is printed with the numbers: the machine may be shared.

    python -m benchmarks.bench_rfbe            # batches 32..512, 64 px, 5 timed steps x 3 processes (minutes)
    python -m benchmarks.bench_rfbe --quick    # batches 32 and 128 at 32 px, one process each (under a minute,
                                               # mostly the four child processes importing torch)
    python -m benchmarks.bench_rfbe --no-write                     # print only
    python -m benchmarks.bench_rfbe --out-dir /tmp/bench           # write /tmp/bench/bench_rfbe.json instead
    # the paper's set-up on a GPU (pretrained Swin-Tiny + Bio_ClinicalBERT, 224 px, queue 4,096; Table 5 reports
    # ~9 GB for RFBE at batch 512 on an RTX 4090 and ~32 GB for end-to-end batch 128):
    python -m benchmarks.bench_rfbe --arch paper --device cuda --size 224 --out bench_rfbe_gpu
"""
from __future__ import annotations

import argparse

from medvlp_lib.eval.efficiency import ARCHS, format_rfbe_report, rfbe_benchmark


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="batches 32 and 128 at 32 px: under a minute")
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="effective batch sizes")
    ap.add_argument("--sub-batch", type=int, default=32, help="RFBE sub-batch size")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per measurement (after 1 warm-up)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="processes per setting, interleaved; median time and memory (default 3; quick 1)")
    ap.add_argument("--min-samples", type=int, default=1280,
                    help="samples each set-up trains in a paired timing process (more steps at small batches)")
    ap.add_argument("--size", type=int, default=None, help="image side in pixels (default 64; quick 32)")
    ap.add_argument("--dim", type=int, default=128, help="embedding size")
    ap.add_argument("--queue", type=int, default=4096, help="queue size per modality")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: medvlp_lib.utils.get_device())")
    ap.add_argument("--arch", default="small", choices=ARCHS,
                    help="small: the GroupNorm CNN + bag of words (default); paper: pretrained Swin-Tiny + "
                         "Bio_ClinicalBERT (the gpu profile; weights from the Hugging Face cache); paper-random: "
                         "Swin-Tiny with random weights + a 2-layer BERT (offline)")
    ap.add_argument("--out", default="bench_rfbe", help="results file stem (default bench_rfbe)")
    ap.add_argument("--out-dir", default=None, help="folder for <out>.json (default: the project's results/)")
    ap.add_argument("--no-write", action="store_true", help="do not write results/<out>.json")
    args = ap.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.size is None:
        args.size = 32 if args.quick else 64
    if args.device is None:
        from medvlp_lib.utils import get_device

        args.device = get_device().type
        if args.device == "mps":
            args.device = "cpu"  # no peak-memory counter comparable to RSS / CUDA
    batches = args.batches or ([32, 128] if args.quick else [32, 64, 128, 256, 512])
    rec = rfbe_benchmark(batches, sub_batch=args.sub_batch, steps=args.steps, repeats=args.repeats,
                         min_samples=args.min_samples, size=args.size, dim=args.dim, queue=args.queue,
                         device=args.device, arch=args.arch)
    rec["quick"] = args.quick
    print(format_rfbe_report(rec))
    if not args.no_write:
        from medvlp_lib.results import write_result

        path = write_result(args.out, rec, profile="quick" if args.quick else "full", directory=args.out_dir)
        print(f"\nwrote {path}")
    return rec


if __name__ == "__main__":
    main()
