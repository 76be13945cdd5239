"""VLCD efficiency table: parameters, MACs and CPU latency of the ResNet-50 teacher and the three students.

``python -m benchmarks.bench_vlcd [--quick] [--threads 1] [--in-chans 3] [--proj linear]``

For each image tower (timm backbone + projection into the 128-d shared space, as built by
:func:`medvlp_lib.models.students.build_student`) at 224 px and 64 px:

* parameters: backbone and total (backbone + projection head);
* MACs per image: ``torch.utils.flop_counter.FlopCounterMode`` on a batch-1 forward; it counts 2 FLOPs
  per multiply-accumulate of convolutions and matrix products, so **MACs = FLOPs / 2**. Element-wise ops
  (batch norm, activations, pooling, softmax) are not counted -- the usual convention for "MACs";
* CPU latency at batch 1 and 32: median (and min) of ``repeats`` timed forwards under
  ``torch.inference_mode()`` after ``warmup`` untimed ones, on ``--threads`` threads (default 1), and the
  median process CPU time of the same forwards;
* speed-up = teacher time / student time (same size and batch; process CPU time on one thread, which a
  shared machine does not inflate, else wall time; the wall-time ratio is kept as
  ``speedup_wall_vs_teacher``) and parameter fraction =
  student / teacher parameters -- the paper's "1.7-4x faster with 25-50 % of the parameters".

``--quick`` (seconds): 112 px and 64 px, batches 1 and 8, 3 repeats. The machine may be shared: the
load average before and after is recorded; compare rows measured in the same run only.
Writes ``results/bench_vlcd.json`` (``rows``: one per model x size x batch).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from medvlp_lib.models.students import STUDENTS, TEACHER, build_student
from medvlp_lib.results import write_result

MODELS = {"ResNet-50 (teacher)": TEACHER, "MobileNetV3-Large": STUDENTS["mobilenetv3"],
          "EfficientNet-B0": STUDENTS["efficientnet_b0"], "EfficientFormer-L1": STUDENTS["efficientformer_l1"]}


def count_macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward of ``x`` (FlopCounterMode FLOPs / 2)."""
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model(x)
    return int(fc.get_total_flops()) // 2


def latency_ms(model: torch.nn.Module, x: torch.Tensor, warmup: int, repeats: int) -> tuple[float, float, float]:
    """(median wall, min wall, median process CPU) time in milliseconds of ``model(x)`` over ``repeats`` runs
    after ``warmup``. On one thread the process CPU time is what the forward costs even when other jobs share
    the core (wall time then also counts the time the scheduler gave to them)."""
    times, cpu = [], []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            model(x)
            times.append((time.perf_counter() - t0) * 1e3)
            cpu.append((time.process_time() - c0) * 1e3)
    return statistics.median(times), min(times), statistics.median(cpu)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="seconds-long run: 112/64 px, batches 1/8, 3 repeats")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: 'one core')")
    ap.add_argument("--in-chans", type=int, default=3, help="input channels (3: RGB photographs; 1: radiographs)")
    ap.add_argument("--embed-dim", type=int, default=128, help="shared embedding dimension")
    ap.add_argument("--proj", choices=("linear", "mlp"), default="linear",
                    help="projection head (linear = CLIP's; mlp adds a hidden layer of the backbone width)")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="override image sizes (px)")
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="override batch sizes")
    ap.add_argument("--repeats", type=int, default=None, help="override timed repeats")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sizes = args.sizes or ([112, 64] if args.quick else [224, 64])
    batches = args.batches or ([1, 8] if args.quick else [1, 32])
    repeats = args.repeats or (3 if args.quick else 10)
    warmup = 1 if args.quick else 2
    load_before = os.getloadavg()

    rows = []
    for size in sizes:
        for label, name in MODELS.items():
            model = build_student(name, embed_dim=args.embed_dim, in_chans=args.in_chans, img_size=size,
                                  proj=args.proj).eval()
            backbone = sum(p.numel() for p in model.encoder.parameters())
            total = sum(p.numel() for p in model.parameters())
            macs = count_macs(model, torch.rand(1, args.in_chans, size, size))
            for bs in batches:
                x = torch.rand(bs, args.in_chans, size, size)
                med, best, cpu_med = latency_ms(model, x, warmup, repeats)
                rows.append(dict(model=label, timm_name=name, size=size, batch=bs, params_backbone=backbone,
                                 params_total=total, macs_per_image=macs, latency_ms_median=med, latency_ms_min=best,
                                 cpu_ms_median=cpu_med, images_per_s=bs * 1e3 / med))
            del model

    teacher = {(r["size"], r["batch"]): r for r in rows if r["timm_name"] == TEACHER}
    basis = "cpu_ms_median" if args.threads == 1 else "latency_ms_median"
    for r in rows:
        t = teacher[(r["size"], r["batch"])]
        r["speedup_vs_teacher"] = t[basis] / r[basis]
        r["speedup_wall_vs_teacher"] = t["latency_ms_median"] / r["latency_ms_median"]
        r["param_fraction_vs_teacher"] = r["params_total"] / t["params_total"]
        r["backbone_param_fraction_vs_teacher"] = r["params_backbone"] / t["params_backbone"]
        r["mac_fraction_vs_teacher"] = r["macs_per_image"] / t["macs_per_image"]

    head = (f"{'model':<20} {'px':>4} {'batch':>5} {'params (M)':>10} {'backbone':>8} {'GMACs/img':>9} "
            f"{'median ms':>10} {'min ms':>8} {'cpu ms':>8} {'img/s':>8} {'speed-up':>8} {'params %':>8} {'MACs %':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['model']:<20} {r['size']:>4} {r['batch']:>5} {r['params_total'] / 1e6:>10.2f} "
              f"{r['params_backbone'] / 1e6:>8.2f} {r['macs_per_image'] / 1e9:>9.3f} {r['latency_ms_median']:>10.1f} "
              f"{r['latency_ms_min']:>8.1f} {r['cpu_ms_median']:>8.1f} {r['images_per_s']:>8.1f} {r['speedup_vs_teacher']:>7.2f}x "
              f"{100 * r['param_fraction_vs_teacher']:>7.1f}% {100 * r['mac_fraction_vs_teacher']:>6.1f}%")
    print(f"MACs = FlopCounterMode FLOPs / 2 (conv + matmul only). speed-up from {basis}. "
          f"threads={args.threads}, repeats={repeats}, "
          f"warmup={warmup}, loadavg before {load_before[0]:.2f} after {os.getloadavg()[0]:.2f}")
    payload = dict(rows=rows, speedup_basis=basis, sizes=sizes, batches=batches, repeats=repeats, warmup=warmup, threads=args.threads,
                   in_chans=args.in_chans, embed_dim=args.embed_dim, proj=args.proj, quick=bool(args.quick),
                   loadavg_before=load_before, loadavg_after=os.getloadavg(), cpu_count=os.cpu_count(),
                   paper_claim="students 1.7-4x faster than the ResNet-50 teacher with 25-50% of its parameters",
                   note=("MACs = torch.utils.flop_counter FLOPs / 2 (convolutions and matrix products; element-wise "
                         "ops not counted). Latency = median of timed forwards after warm-up under "
                         "torch.inference_mode on a possibly shared machine: see loadavg. Speed-ups use "
                         "process CPU time on one thread (not inflated by other jobs), else wall time."))
    write_result("bench_vlcd", payload)
    return payload


if __name__ == "__main__":
    main()
