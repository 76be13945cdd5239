"""Benchmark (chapter 10): the memory of MSD on the Adaptor at large batches, plain vs RFBE (sub-batch 32).

The Adaptor trains on cached frozen tokens, so its training memory is the Adaptor's activations. For each effective
batch (32, 128, 512 by default) one training step of :class:`~medvlp_lib.methods.compose.AdaptorMSD` runs plainly
and through :class:`~medvlp_lib.methods.rfbe.RFBE` (sub-batch 32), on synthetic tokens of the chapter's shapes (a
4 x 4 grid of 256-d ResNet-18 ``layer3`` tokens; 64 text tokens of 384-d MiniLM states; Adaptor width 128, 2 layers,
queue 1,024). Measured per step:

* ``peak_saved_mb``: the peak of the activations autograd keeps alive for the backward pass (every tensor saved by
  the graph, counted while it is alive: ``torch.autograd.graph.saved_tensors_hooks``) -- the memory RFBE bounds,
  exact and independent of the allocator; on CUDA also ``peak_cuda_mb`` (``torch.cuda.max_memory_allocated``);
* ``cpu_ms_per_sample``: process CPU time of the step (median of ``--steps``) per sample (wall time on CUDA).

    python -m benchmarks.bench_compose                      # batches 32, 128, 512 (a minute or two on one core)
    python -m benchmarks.bench_compose --batches 32 128 --no-write
    python -m benchmarks.bench_compose --device cuda --width 768 --out bench_compose_gpu

Writes ``results/bench_compose.json`` (``--out-dir`` to write elsewhere) through :func:`medvlp_lib.results.write_result`.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from medvlp_lib.methods.compose import AdaptorMSD
from medvlp_lib.methods.rfbe import RFBE
from medvlp_lib.models.adaptor import Adaptor


class SavedTensorMeter:
    """Live bytes of the tensors autograd saves for backward, and their peak, while the context is active."""

    def __init__(self):
        self.live = self.peak = 0

    def __enter__(self):
        meter = self

        class _Held:
            __slots__ = ("t", "n")

            def __init__(self, t):
                self.t, self.n = t, t.numel() * t.element_size()
                meter.live += self.n
                meter.peak = max(meter.peak, meter.live)

            def __del__(self):
                meter.live -= self.n

        self._ctx = torch.autograd.graph.saved_tensors_hooks(_Held, lambda h: h.t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


def _batch(n: int, n_img: int, d_img: int, n_txt: int, d_txt: int, device, step: int) -> dict:
    g = torch.Generator().manual_seed(step)
    return {"img_tokens": torch.randn(n, n_img, d_img, generator=g).to(device),
            "txt_tokens": torch.randn(n, n_txt, d_txt, generator=g).to(device),
            "txt_mask": torch.ones(n, n_txt, dtype=torch.bool, device=device),
            "index": torch.arange(step * n, (step + 1) * n, device=device)}


def measure(mode: str, batch: int, *, sub_batch: int = 32, steps: int = 3, width: int = 128, queue: int = 1024,
            device: str = "cpu", n_img: int = 16, d_img: int = 256, n_txt: int = 64, d_txt: int = 384) -> dict:
    """One configuration: ``mode`` ``"plain"`` or ``"rfbe"`` at effective ``batch``."""
    torch.manual_seed(0)
    adaptor = Adaptor(d_img, d_txt, width=width, embed_dim=128, num_layers=2, num_heads=8)
    method = AdaptorMSD(adaptor, queue_size=max(queue, batch)).to(device)
    if mode == "rfbe":
        method = RFBE(method, sub_batch=sub_batch)
    elif mode != "plain":
        raise ValueError(f"mode must be 'plain' or 'rfbe', got {mode!r}")
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-4)
    times, peaks, cuda = [], [], []
    for step in range(steps + 1):  # step 0 warms up
        b = _batch(batch, n_img, d_img, n_txt, d_txt, device, step)
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.process_time() if device == "cpu" else time.perf_counter()
        with SavedTensorMeter() as meter:
            out = method.training_step(b)
            if mode == "plain":
                out["loss"].backward()
                del out
        opt.step()
        opt.zero_grad(set_to_none=True)
        method.after_optimizer_step()
        if device == "cuda":
            torch.cuda.synchronize()
            cuda.append(torch.cuda.max_memory_allocated() / 2**20)
        dt = (time.process_time() if device == "cpu" else time.perf_counter()) - t0
        if step:
            times.append(dt)
            peaks.append(meter.peak / 2**20)
    row = {"mode": mode, "batch": batch, "sub_batch": sub_batch if mode == "rfbe" else batch,
           "peak_saved_mb": float(np.median(peaks)), "cpu_ms_per_sample": 1000 * float(np.median(times)) / batch}
    if cuda:
        row["peak_cuda_mb"] = float(np.median(cuda))
    return row


def format_report(rows: list[dict]) -> str:
    lines = [f"{'mode':6} {'batch':>6} {'sub':>5} {'saved act. MB':>14} {'ms/sample':>10}"]
    for r in rows:
        lines.append(f"{r['mode']:6} {r['batch']:>6} {r['sub_batch']:>5} {r['peak_saved_mb']:>14.1f} "
                     f"{r['cpu_ms_per_sample']:>10.2f}" + (f"  cuda {r['peak_cuda_mb']:.0f} MB"
                                                           if "peak_cuda_mb" in r else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 128, 512])
    ap.add_argument("--sub-batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up)")
    ap.add_argument("--width", type=int, default=128, help="Adaptor width (the paper: 768)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="bench_compose")
    ap.add_argument("--out-dir", default=None, help="folder for <out>.json (default: the project's results/)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = [measure(mode, b, sub_batch=args.sub_batch, steps=args.steps, width=args.width, device=args.device)
            for b in args.batches for mode in ("plain", "rfbe")]
    rec = {"rows": rows, "sub_batch": args.sub_batch, "width": args.width, "device": args.device}
    print(format_report(rows))
    if not args.no_write:
        from medvlp_lib.results import write_result

        print(f"\nwrote {write_result(args.out, rec, profile=args.device, directory=args.out_dir)}")
    return rec


if __name__ == "__main__":
    main()
