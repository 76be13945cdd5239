"""Benchmark: resource-free batch enlargement (RFBE) vs naive end-to-end MSD training, one CPU core.

For each effective batch size (32, 64, 128, 256, 512) two training set-ups are measured, EACH IN ITS OWN
SUBPROCESS so that its peak memory is its own:

* ``naive``: ``MSD.training_step`` on the whole batch, one ``backward`` (activations of all B queries live
  at once);
* ``rfbe``: ``RFBE(MSD, sub_batch=32, chunk_views=True)``: augmented views built 32 rows at a time (as a data
  loader augments sample by sample), momentum keys for all sub-batches without gradients, then the query
  branch sub-batch by sub-batch with gradient accumulation (see ``medvlp_lib/methods/rfbe.py``).

Both do the optimiser step, one EMA update and one enqueue per step. Model: a small dual encoder (a
3-layer GroupNorm CNN on 64 px single-channel images and a hashed-token bag-of-words text tower, 128-d
embeddings, queue 4,096), synthetic images and reports built just in time for each step; nothing is
downloaded.

Memory: on CUDA ``torch.cuda.max_memory_allocated``. On CPU the child's peak resident set size (``VmHWM``)
is reported three ways: ``peak_mb`` (the whole process, including ~650 MB of Python + torch runtime that any
process pays), ``net_peak_mb`` (peak minus the RSS measured after the imports, before the model is built: model,
optimiser state, inputs and training -- the CPU analogue of CUDA's allocated memory, and what the memory
target is judged on) and ``train_mb`` (peak above the RSS after building model and optimiser).

Each setting runs in ``--repeats`` separate processes (default 3, interleaved with the other settings); memory is
the median over them, time the best. Time per sample = best (minimum) over the timed steps (after one warm-up
step) and repeats / effective batch, both as wall
time and as *process CPU time* (``time.process_time``). Each child runs one intra-op thread, so its CPU time is
the work it did; other jobs on a shared machine stretch its wall time (waiting for a core) much more than its
CPU time. On CPU the time target is judged on CPU time (as ``benchmarks/bench_render.py`` does); on CUDA on
wall time after ``synchronize``. The load average is recorded per row and for the whole run.

Targets (issue 3): RFBE's peak memory at effective batch 512 within 1.25x of its peak at 32; RFBE's time per
sample within 1.15x of naive's at the same effective batch (where naive fits).

    python -m benchmarks.bench_rfbe            # batches 32..512, 64 px, 5 timed steps each (minutes)
    python -m benchmarks.bench_rfbe --quick    # batches 32 and 128 at 32 px, 5 timed steps (under a minute,
                                               # mostly the four child processes importing torch)
    # the paper's set-up on a GPU (pretrained Swin-Tiny + Bio_ClinicalBERT, 224 px, queue 4,096; Table 5 reports
    # ~9 GB for RFBE at batch 512 on an RTX 4090 and ~32 GB for end-to-end batch 128):
    python -m benchmarks.bench_rfbe --arch paper --device cuda --size 224 --out bench_rfbe_gpu
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

MEM_RATIO_TARGET = 1.25
TIME_RATIO_TARGET = 1.15

_WORDS = ("heart size normal lungs are clear no pneumothorax pleural effusion cardiomegaly opacity left right "
          "lower upper lobe consolidation atelectasis stable mediastinum degenerative changes thoracic spine "
          "granuloma calcified emphysema edema mild moderate small large bilateral acute process").split()


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    """Peak resident set size of this process (MB): ``VmHWM`` of ``/proc/self/status`` on Linux.

    Not ``getrusage(...).ru_maxrss``: Linux carries the maximum RSS across ``fork`` + ``execve``, so a child
    started from a large parent (a Jupyter kernel holding gigabytes) reports at least the parent's RSS at fork
    time; ``VmHWM`` belongs to the child's own address space. ``ru_maxrss`` is the fallback elsewhere (macOS
    reports it in bytes).
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _build(size: int, dim: int, queue: int, arch: str = "small"):

    import torch

    from medvlp_lib.methods.msd import MSD
    from medvlp_lib.models.toy import ToyDualEncoder

    torch.manual_seed(0)
    if arch == "small":  # 3 GroupNorm conv blocks on 64 px films, a hashed bag-of-words text tower
        return MSD(ToyDualEncoder(dim, channels=(16, 32, 64), strides=(1, 2, 2), norm="groupnorm", groups=4, pool=1,
                                  vocab=4096, token_dim=64, text_hidden=128, text_act="gelu"), queue_size=queue)
    from medvlp_lib.experiments.batch_enlargement import PAPER, build_paper_dual

    if arch == "paper":  # pretrained Swin-Tiny + Bio_ClinicalBERT (needs the weights in the Hugging Face cache)
        dual = build_paper_dual(image_size=size, pretrained=True)
    elif arch == "paper-random":  # the same architecture, random weights, a small BERT (offline)
        from transformers import BertConfig

        dual = build_paper_dual(image_size=size, pretrained=False, embed_dim=dim, text_config=BertConfig(
            vocab_size=30522, hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512))
    else:
        raise ValueError(f"unknown --arch {arch!r}")
    return MSD(dual, queue_size=queue, momentum=PAPER["momentum"])


def _batch(n: int, size: int, step: int):
    import torch

    g = torch.Generator().manual_seed(1000 + step)
    words = torch.randint(len(_WORDS), (n, 12), generator=g).tolist()
    texts = [". ".join(" ".join(_WORDS[w] for w in row[i:i + 4]) for i in (0, 4, 8)) + "." for row in words]
    return dict(image=torch.rand(n, 1, size, size, generator=g), text=texts,
                index=torch.arange(step * n, (step + 1) * n))


def _child(mode: str, batch: int, sub_batch: int, steps: int, size: int, dim: int, queue: int, device: str,
           arch: str = "small") -> dict:
    import torch

    torch.set_num_threads(1)
    from medvlp_lib.methods.rfbe import RFBE

    dev = torch.device(device)
    runtime = _rss_mb()  # the Python + torch runtime (CUDA libraries included) before anything is built
    method = _build(size, dim, queue, arch).to(dev)
    runner = RFBE(method, sub_batch=sub_batch, chunk_views=True) if mode == "rfbe" else method
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-3)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = _rss_mb()
    base_cuda = torch.cuda.memory_allocated() / 2**20 if dev.type == "cuda" else 0.0
    times, cpu_times, loss = [], [], float("nan")
    for s in range(steps + 1):
        b = _batch(batch, size, s)  # built just in time: one batch of inputs alive at once, as from a loader
        b["image"] = b["image"].to(dev)
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        torch.manual_seed(s)
        out = runner.training_step(b)
        if not getattr(runner, "manual_backward", False):
            out["loss"].backward()
        opt.step()
        runner.after_optimizer_step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if s > 0:  # step 0 is a warm-up
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
        loss = float(out["loss"].detach()) if hasattr(out["loss"], "detach") else float(out["loss"])
        del b, out
    best = min(times)  # best of the timed steps: robust to other processes sharing the cores
    best_cpu = min(cpu_times)
    row = {"mode": mode, "batch": batch, "sub_batch": sub_batch if mode == "rfbe" else batch, "size": size,
           "steps": steps, "s_per_step": best, "s_per_step_mean": sum(times) / len(times),
           "ms_per_sample": 1e3 * best / batch, "cpu_s_per_step": best_cpu,
           "cpu_s_per_step_mean": sum(cpu_times) / len(cpu_times), "cpu_ms_per_sample": 1e3 * best_cpu / batch,
           "loss": loss, "device": dev.type, "arch": arch, "loadavg_1min": os.getloadavg()[0]}
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        row.update(peak_mb=peak, net_peak_mb=peak, base_mb=base_cuda, runtime_mb=0.0, train_mb=peak - base_cuda,
                   memory="cuda_max_allocated")
    else:
        peak = _peak_rss_mb()
        row.update(peak_mb=peak, net_peak_mb=peak - runtime, runtime_mb=runtime, base_mb=base, train_mb=peak - base,
                   memory="cpu_peak_rss")
    return row


def _run_child(mode: str, batch: int, args) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_rfbe", "--child", mode, str(batch), "--sub-batch",
           str(args.sub_batch), "--steps", str(args.steps), "--size", str(args.size), "--dim", str(args.dim),
           "--queue", str(args.queue), "--device", args.device, "--arch", args.arch]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if proc.returncode != 0:
        err = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit code {proc.returncode}"
        return {"mode": mode, "batch": batch, "error": err}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _combine(reps: list[dict]) -> dict:
    """One row from the repeated measurements of a setting: times = best over repeats (each already the best of
    its steps), memory = median over repeats; every repeat's values are kept in ``*_all``."""
    ok = [r for r in reps if "error" not in r]
    if not ok:
        return reps[0]
    best = dict(min(ok, key=lambda r: r["cpu_ms_per_sample"]))
    for key in ("ms_per_sample", "s_per_step"):
        best[key] = min(r[key] for r in ok)
    for key in ("peak_mb", "net_peak_mb", "train_mb", "runtime_mb", "base_mb"):
        best[key] = float(sorted(r[key] for r in ok)[len(ok) // 2])
    for key in ("cpu_ms_per_sample", "ms_per_sample", "peak_mb", "net_peak_mb", "loadavg_1min"):
        best[f"{key}_all"] = [r[key] for r in ok]
    best["repeats"] = len(ok)
    return best


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="batches 32 and 128 at 32 px: under a minute")
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="effective batch sizes")
    ap.add_argument("--sub-batch", type=int, default=32, help="RFBE sub-batch size")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per measurement (after 1 warm-up)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="processes per setting, interleaved; best time / median memory (default 3; quick 1)")
    ap.add_argument("--size", type=int, default=None, help="image side in pixels (default 64; quick 32)")
    ap.add_argument("--dim", type=int, default=128, help="embedding size")
    ap.add_argument("--queue", type=int, default=4096, help="queue size per modality")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: medvlp_lib.utils.get_device())")
    ap.add_argument("--arch", default="small", choices=("small", "paper", "paper-random"),
                    help="small: the GroupNorm CNN + bag of words (default); paper: pretrained Swin-Tiny + "
                         "Bio_ClinicalBERT (the gpu profile; weights from the Hugging Face cache); paper-random: "
                         "Swin-Tiny with random weights + a 2-layer BERT (offline)")
    ap.add_argument("--out", default="bench_rfbe", help="results file stem (default bench_rfbe)")
    ap.add_argument("--no-write", action="store_true", help="do not write results/<out>.json")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "BATCH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.steps is None:
        args.steps = 5
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.size is None:
        args.size = 32 if args.quick else 64
    if args.device is None:
        from medvlp_lib.utils import get_device

        args.device = get_device().type
        if args.device == "mps":
            args.device = "cpu"  # no peak-memory counter comparable to RSS / CUDA
    if args.child:
        print(json.dumps(_child(args.child[0], int(args.child[1]), args.sub_batch, args.steps, args.size, args.dim,
                                args.queue, args.device, args.arch)))
        return {}
    batches = args.batches or ([32, 128] if args.quick else [32, 64, 128, 256, 512])
    if any(b <= 0 for b in batches) or args.sub_batch <= 0 or args.steps <= 0 or args.repeats <= 0:
        raise ValueError("--batches, --sub-batch, --steps and --repeats must be positive")

    from tqdm.auto import tqdm

    load_before = os.getloadavg()
    # each (mode, batch) is measured in `repeats` separate processes, interleaved (the order of naive / rfbe
    # alternates between rounds) so that a burst of load on the shared machine does not hit one setting only
    jobs = [(mode, b) for r in range(args.repeats) for b in batches
            for mode in (("naive", "rfbe") if r % 2 == 0 else ("rfbe", "naive"))]
    raw = [_run_child(mode, b, args) for mode, b in tqdm(jobs, desc="bench_rfbe")]
    rows = [_combine([x for x in raw if x["mode"] == mode and x["batch"] == b])
            for b in batches for mode in ("naive", "rfbe")]
    load_after = os.getloadavg()
    cuda = args.device == "cuda"
    tkey = "ms_per_sample" if cuda else "cpu_ms_per_sample"  # what the time target is judged on
    naive = {r["batch"]: r for r in rows if r["mode"] == "naive" and "error" not in r}
    rfbe = {r["batch"]: r for r in rows if r["mode"] == "rfbe" and "error" not in r}
    for r in rows:
        if r["mode"] == "rfbe" and "error" not in r and r["batch"] in naive:
            r["wall_time_ratio_vs_naive"] = r["ms_per_sample"] / naive[r["batch"]]["ms_per_sample"]
            r["cpu_time_ratio_vs_naive"] = r["cpu_ms_per_sample"] / naive[r["batch"]]["cpu_ms_per_sample"]
            r["time_ratio_vs_naive"] = r["wall_time_ratio_vs_naive" if cuda else "cpu_time_ratio_vs_naive"]
            r["time_ok"] = bool(r["time_ratio_vs_naive"] <= TIME_RATIO_TARGET)
    lo, hi = min(batches), max(batches)

    def ratio(table, key):
        return table[hi][key] / max(table[lo][key], 1e-9) if lo in table and hi in table else None

    mem_ratio, net_ratio = ratio(rfbe, "peak_mb"), ratio(rfbe, "net_peak_mb")
    train_ratio = ratio(rfbe, "train_mb")
    naive_ratio, naive_net_ratio = ratio(naive, "peak_mb"), ratio(naive, "net_peak_mb")
    time_ok = [r["time_ok"] for r in rows if "time_ok" in r]

    mem_name = "CUDA max allocated" if cuda else "peak RSS of the child process"
    print(f"\nRFBE vs naive MSD training ({args.device}, one thread, {args.size} px, sub-batch {args.sub_batch}, "
          f"queue {args.queue}). peak = {mem_name}; net = peak minus the Python+torch runtime measured before "
          f"the model is built; train = peak above the RSS after building model and optimiser. "
          f"time = best of {args.steps} steps x {args.repeats} processes, {'wall' if cuda else 'process CPU'} time "
          f"per sample")
    print(f"{'batch':>6} {'mode':>6} {'peak MB':>8} {'net MB':>8} {'train MB':>9} {'cpu ms/s':>9} {'wall ms/s':>10} "
          f"{'t/naive':>8} {'time ok':>8} {'load':>5}")
    for r in rows:
        if "error" in r:
            print(f"{r['batch']:>6} {r['mode']:>6} error: {r['error']}")
            continue
        rt = f"{r['time_ratio_vs_naive']:.2f}" if "time_ratio_vs_naive" in r else "-"
        ok = ("yes" if r["time_ok"] else "NO") if "time_ok" in r else "-"
        print(f"{r['batch']:>6} {r['mode']:>6} {r['peak_mb']:>8.0f} {r['net_peak_mb']:>8.0f} {r['train_mb']:>9.0f} "
              f"{r['cpu_ms_per_sample']:>9.2f} {r['ms_per_sample']:>10.2f} {rt:>8} {ok:>8} {r['loadavg_1min']:>5.1f}")
    targets = {
        "rfbe_peak_ratio_max_vs_min_batch": mem_ratio, "rfbe_peak_ratio_target": MEM_RATIO_TARGET,
        "rfbe_memory_ok": None if mem_ratio is None else bool(mem_ratio <= MEM_RATIO_TARGET),
        "rfbe_net_peak_ratio_max_vs_min_batch": net_ratio,
        "rfbe_net_memory_ok": None if net_ratio is None else bool(net_ratio <= MEM_RATIO_TARGET),
        "rfbe_train_mb_ratio_max_vs_min_batch": train_ratio,
        "naive_peak_ratio_max_vs_min_batch": naive_ratio, "naive_net_peak_ratio_max_vs_min_batch": naive_net_ratio,
        "time_ratio_target": TIME_RATIO_TARGET, "time_judged_on": "wall" if cuda else "process_cpu_time",
        "rfbe_time_ok_all": bool(time_ok) and all(time_ok), "batches": [lo, hi],
    }

    def f(x):
        return "n/a" if x is None else f"{x:.2f}"

    print(f"\nRFBE memory at batch {hi} / at batch {lo}: whole process {f(mem_ratio)}, net of runtime {f(net_ratio)} "
          f"(target <= {MEM_RATIO_TARGET}: {'pass' if targets['rfbe_net_memory_ok'] else 'FAIL'} on net, "
          f"{'pass' if targets['rfbe_memory_ok'] else 'FAIL'} on whole process); naive: whole process "
          f"{f(naive_ratio)}, net {f(naive_net_ratio)}")
    print(f"RFBE time/sample within {TIME_RATIO_TARGET}x of naive at every batch ({targets['time_judged_on']}): "
          f"{'pass' if targets['rfbe_time_ok_all'] else 'FAIL'}")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} on {os.cpu_count()} cores "
          f"(wall-clock ratios depend on it; CPU-time ratios much less)")
    payload = {"device": args.device, "threads": 1, "cpu_count": os.cpu_count(), "quick": args.quick,
               "size": args.size, "dim": args.dim, "queue": args.queue, "sub_batch": args.sub_batch,
               "steps": args.steps, "repeats": args.repeats, "arch": args.arch, "chunk_views": True, "loadavg_before": list(load_before),
               "loadavg_after": list(load_after), "rows": rows, "targets": targets}
    if not args.no_write:
        from medvlp_lib.results import write_result

        path = write_result(args.out, payload, profile="quick" if args.quick else "full")
        print(f"\nwrote {path}")
    return payload


if __name__ == "__main__":
    main()
