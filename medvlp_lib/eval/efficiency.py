"""Efficiency measurements: peak memory and CPU time of a training set-up in its own process, and FLOPs.

What ``benchmarks/bench_rfbe.py`` (RFBE vs naive MSD training) and ``benchmarks/bench_adaptor.py`` (the Adaptor
on cached embeddings vs CLIP end to end) measure, as library functions that chapter 04 calls directly.

RFBE vs naive (:func:`rfbe_benchmark`)
--------------------------------------
For each effective batch two set-ups (:class:`TrainingSetup`) are compared:

* ``naive``: ``MSD.training_step`` on the whole batch, one ``backward`` (activations of all B queries live at once);
* ``rfbe``: ``RFBE(MSD, sub_batch, chunk_views=True)``: views built ``sub_batch`` rows at a time, momentum keys
  for all sub-batches without gradients, then the query branch sub-batch by sub-batch with gradient
  accumulation (:mod:`medvlp_lib.methods.rfbe`).

Both do the optimiser step, one EMA update and one enqueue per step, on synthetic films and reports built just in
time for each step (:func:`bench_batch`); the model is :func:`build_bench_method` (a small GroupNorm CNN + hashed
bag-of-words dual encoder, or the paper's Swin-Tiny + BERT).

Memory: each set-up runs alone in its own Python process (:func:`measure_in_subprocess` runs
:func:`measure_training` there) so that its peak memory is its own. On CUDA ``torch.cuda.max_memory_allocated``;
on CPU the child's peak resident set size
(:func:`peak_rss_mb`), reported as ``peak_mb`` (whole process, including the Python + torch runtime),
``net_peak_mb`` (peak minus the RSS right after the imports: model, optimiser, inputs and training, the analogue
of CUDA's allocated memory, on which the memory target is judged) and ``train_mb`` (peak above the RSS after
building model and optimiser).

Time: both set-ups are built in ONE process (:func:`measure_paired`, one intra-op thread) and their steps
alternate, so that both see the same load; each reports its MEDIAN step, and the RFBE / naive ratio is taken within
the process. Every measurement runs in ``repeats`` processes, interleaved with the other settings, and the row holds
the median over them. On CPU time is process CPU time (``time.process_time``: the work done, much less sensitive
than wall time to other jobs on the machine; but not immune: other processes on the same cores evict caches, which
is why the comparison is paired); on CUDA wall time after ``synchronize``.

Targets: RFBE's net peak memory at the largest batch within :data:`MEM_RATIO_TARGET` x its value at the smallest;
where RFBE runs one sub-batch (batch <= sub-batch: exactly naive's work) its time within
:data:`TIME_RATIO_SAME_WORK` x naive's, and above it strictly faster than naive (ratio < :data:`TIME_RATIO_ABOVE`).

FLOPs (:func:`count_flops`) are counted with ``torch.utils.flop_counter.FlopCounterMode`` (matrix products,
convolutions and attention, forward and backward), which needs no trained weights.
"""
from __future__ import annotations

import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..methods.adaptor import AdaptorMethod
from ..methods.clip import CLIP
from ..methods.msd import MSD
from ..methods.rfbe import RFBE
from ..models.adaptor import Adaptor, tokens_from_feature_map
from ..models.encoders import DualEncoder
from ..models.paper_msd import PAPER, build_paper_dual
from ..models.toy import ToyDualEncoder

__all__ = ["rss_mb", "peak_rss_mb", "bench_batch", "build_bench_method", "TrainingSetup", "measure_training",
           "measure_paired", "measure", "measure_in_subprocess", "combine_repeats", "rfbe_benchmark",
           "format_rfbe_report", "count_flops", "adaptor_vs_clip_flops",
           "MEM_RATIO_TARGET", "TIME_RATIO_SAME_WORK", "TIME_RATIO_ABOVE", "ARCHS"]

MEM_RATIO_TARGET = 1.25
"""RFBE's net peak memory at the largest effective batch / at the smallest (issue 3)."""
TIME_RATIO_SAME_WORK = 1.05
"""RFBE / naive time per sample where RFBE runs one sub-batch (batch <= sub-batch), i.e. does naive's work."""
TIME_RATIO_ABOVE = 1.0
"""RFBE / naive time per sample must be below this above the sub-batch (RFBE faster than naive)."""
ARCHS = ("small", "paper", "paper-random", "paper-shape")

_WORDS = ("heart size normal lungs are clear no pneumothorax pleural effusion cardiomegaly opacity left right "
          "lower upper lobe consolidation atelectasis stable mediastinum degenerative changes thoracic spine "
          "granuloma calcified emphysema edema mild moderate small large bilateral acute process").split()


# ----------------------------------------------------------------------------------------------------
# memory of this process
# ----------------------------------------------------------------------------------------------------
def rss_mb() -> float:
    """Current resident set size of this process in MB (``/proc/self/statm``; Linux)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
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


# ----------------------------------------------------------------------------------------------------
# one training set-up
# ----------------------------------------------------------------------------------------------------
def bench_batch(n: int, size: int, step: int) -> dict:
    """A deterministic synthetic batch for step ``step``: ``dict(image [n, 1, size, size] uniform in [0, 1],
    text (n reports of three 4-word sentences from a 36-word radiology vocabulary), index [n] = sample ids)``."""
    for name, v in (("n", n), ("size", size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    g = torch.Generator().manual_seed(1000 + step)
    words = torch.randint(len(_WORDS), (n, 12), generator=g).tolist()
    texts = [". ".join(" ".join(_WORDS[w] for w in row[i:i + 4]) for i in (0, 4, 8)) + "." for row in words]
    return dict(image=torch.rand(n, 1, size, size, generator=g), text=texts,
                index=torch.arange(step * n, (step + 1) * n))


def build_bench_method(size: int, dim: int = 128, queue: int = 4096, arch: str = "small") -> MSD:
    """The MSD method the RFBE benchmark trains (seeded: the same weights in every process).

    ``arch``: ``"small"`` -- a :class:`~medvlp_lib.models.toy.ToyDualEncoder` with 3 GroupNorm conv blocks
    (16, 32, 64 channels) and a hashed bag-of-words text tower, ``dim``-d embeddings; ``"paper"`` -- the paper's
    pretrained Swin-Tiny + Bio_ClinicalBERT at ``size`` px (needs the weights in the Hugging Face cache);
    ``"paper-random"`` -- the same Swin-Tiny with random weights and a 2-layer BERT (offline); ``"paper-shape"`` --
    Swin-Tiny and a BERT-base-shaped text encoder (12 layers, 768 wide), both random: the paper's architecture,
    hence its memory, without any download (the GPU check's default). Queue ``queue``.
    """
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    torch.manual_seed(0)
    if arch == "small":
        return MSD(ToyDualEncoder(dim, channels=(16, 32, 64), strides=(1, 2, 2), norm="groupnorm", groups=4, pool=1,
                                  vocab=4096, token_dim=64, text_hidden=128, text_act="gelu"), queue_size=queue)
    if arch == "paper":
        dual = build_paper_dual(image_size=size, pretrained=True)
    else:
        from transformers import BertConfig

        small = arch == "paper-random"
        text = BertConfig(vocab_size=30522, hidden_size=128 if small else 768, num_hidden_layers=2 if small else 12,
                          num_attention_heads=2 if small else 12, intermediate_size=512 if small else 3072)
        dual = build_paper_dual(image_size=size, pretrained=False, embed_dim=dim if small else PAPER["embed_dim"],
                                text_config=text)
    return MSD(dual, queue_size=queue, momentum=PAPER["momentum"])


class TrainingSetup:
    """One training set-up of the benchmark: ``mode`` ``"naive"`` (``MSD.training_step`` on the whole batch, one
    ``backward``) or ``"rfbe"`` (``RFBE(MSD, sub_batch, chunk_views=True)``), with its AdamW optimiser, on
    :func:`build_bench_method` (``size``, ``dim``, ``queue``, ``arch``) on ``device``."""

    def __init__(self, mode: str, sub_batch: int = 32, size: int = 64, dim: int = 128, queue: int = 4096,
                 device: str = "cpu", arch: str = "small"):
        if mode not in ("naive", "rfbe"):
            raise ValueError(f"mode must be 'naive' or 'rfbe', got {mode!r}")
        if isinstance(sub_batch, bool) or not isinstance(sub_batch, int) or sub_batch < 1:
            raise ValueError(f"sub_batch must be a positive integer, got {sub_batch!r}")
        self.mode, self.size, self.device = mode, size, torch.device(device)
        self.method = build_bench_method(size, dim, queue, arch).to(self.device)
        self.runner = RFBE(self.method, sub_batch=sub_batch, chunk_views=True) if mode == "rfbe" else self.method
        self.opt = torch.optim.AdamW([p for p in self.method.parameters() if p.requires_grad], lr=1e-3)

    def step(self, batch: int, s: int) -> tuple[float, float, float]:
        """Training step number ``s`` on :func:`bench_batch` (``batch`` rows; built before the clock starts):
        zero grads, forward + backward, optimiser step, EMA update + enqueue. Returns ``(wall s, CPU s, loss)``."""
        b = bench_batch(batch, self.size, s)  # built just in time: one batch of inputs alive at once, as from a loader
        b["image"] = b["image"].to(self.device)
        t0, c0 = time.perf_counter(), time.process_time()
        self.opt.zero_grad(set_to_none=True)
        torch.manual_seed(s)
        out = self.runner.training_step(b)
        if not getattr(self.runner, "manual_backward", False):
            out["loss"].backward()
        self.opt.step()
        self.runner.after_optimizer_step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        loss = out["loss"]
        return wall, cpu, float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)


def _check_positive(**values) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def measure_training(mode: str, batch: int, sub_batch: int = 32, steps: int = 5, size: int = 64, dim: int = 128,
                     queue: int = 4096, device: str = "cpu", arch: str = "small") -> dict:
    """Train ``steps`` + 1 steps of one set-up (:class:`TrainingSetup`) in THIS process and return its row: peak
    memory (see the module docstring) and the time of the steps after the first (a warm-up).

    Sets one intra-op thread. Row keys: ``mode``, ``batch``, ``sub_batch``, ``size``, ``steps``, ``s_per_step`` /
    ``cpu_s_per_step`` (median over the timed steps, wall / process CPU), their means (``*_mean``), the per-step
    lists ``wall_s_steps`` / ``cpu_s_steps``, ``ms_per_sample`` / ``cpu_ms_per_sample`` (median step / batch),
    ``loss``, ``device``, ``arch``, ``loadavg_1min``, and the memory keys ``peak_mb``, ``net_peak_mb``,
    ``runtime_mb``, ``base_mb``, ``train_mb``, ``memory``. Run it in a fresh process (:func:`measure_in_subprocess`)
    for a peak memory of its own.
    """
    _check_positive(batch=batch, steps=steps)
    torch.set_num_threads(1)
    dev = torch.device(device)
    runtime = rss_mb()  # the Python + torch runtime (CUDA libraries included) before anything is built
    setup = TrainingSetup(mode, sub_batch, size, dim, queue, device, arch)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = rss_mb()
    base_cuda = torch.cuda.memory_allocated() / 2**20 if dev.type == "cuda" else 0.0
    times, cpu_times, loss = [], [], float("nan")
    for s in range(steps + 1):
        wall, cpu, loss = setup.step(batch, s)
        if s > 0:  # step 0 is a warm-up
            times.append(wall)
            cpu_times.append(cpu)
    wall, cpu = statistics.median(times), statistics.median(cpu_times)
    row = {"mode": mode, "batch": batch, "sub_batch": sub_batch if mode == "rfbe" else batch, "size": size,
           "steps": steps, "s_per_step": wall, "s_per_step_mean": sum(times) / len(times),
           "ms_per_sample": 1e3 * wall / batch, "cpu_s_per_step": cpu,
           "cpu_s_per_step_mean": sum(cpu_times) / len(cpu_times), "cpu_ms_per_sample": 1e3 * cpu / batch,
           "wall_s_steps": times, "cpu_s_steps": cpu_times,
           "loss": loss, "device": dev.type, "arch": arch, "loadavg_1min": os.getloadavg()[0]}
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        row.update(peak_mb=peak, net_peak_mb=peak, base_mb=base_cuda, runtime_mb=0.0, train_mb=peak - base_cuda,
                   memory="cuda_max_allocated")
    else:
        peak = peak_rss_mb()
        row.update(peak_mb=peak, net_peak_mb=peak - runtime, runtime_mb=runtime, base_mb=base, train_mb=peak - base,
                   memory="cpu_peak_rss")
    return row


def measure_paired(batch: int, sub_batch: int = 32, steps: int = 5, size: int = 64, dim: int = 128,
                   queue: int = 4096, device: str = "cpu", arch: str = "small") -> dict:
    """Time naive and RFBE training of the same model (same initial weights, same batches) in THIS process, their
    steps alternating naive, rfbe | rfbe, naive | ... after one warm-up step each, so that both see the same load
    on a shared machine; sets one intra-op thread.

    Returns ``dict(mode="paired", batch, steps, naive / rfbe = dict(cpu_s_steps, wall_s_steps,
    cpu_ms_per_sample, ms_per_sample (median step / batch)), cpu_ratio / wall_ratio (rfbe / naive medians),
    loadavg_1min)``. No memory: both set-ups live in this process.
    """
    _check_positive(batch=batch, steps=steps)
    torch.set_num_threads(1)
    setups = {m: TrainingSetup(m, sub_batch, size, dim, queue, device, arch) for m in ("naive", "rfbe")}
    times = {m: ([], []) for m in setups}
    for s in range(steps + 1):
        for m in (("naive", "rfbe") if s % 2 == 0 else ("rfbe", "naive")):
            wall, cpu, _ = setups[m].step(batch, s)
            if s > 0:
                times[m][0].append(wall)
                times[m][1].append(cpu)
    out = {"mode": "paired", "batch": batch, "steps": steps, "loadavg_1min": os.getloadavg()[0]}
    for m, (wall, cpu) in times.items():
        out[m] = {"wall_s_steps": wall, "cpu_s_steps": cpu, "ms_per_sample": 1e3 * statistics.median(wall) / batch,
                  "cpu_ms_per_sample": 1e3 * statistics.median(cpu) / batch}
    out["cpu_ratio"] = out["rfbe"]["cpu_ms_per_sample"] / out["naive"]["cpu_ms_per_sample"]
    out["wall_ratio"] = out["rfbe"]["ms_per_sample"] / out["naive"]["ms_per_sample"]
    return out


def measure(mode: str, batch: int, **settings) -> dict:
    """:func:`measure_paired` for ``mode="paired"``, else :func:`measure_training` (``"naive"`` / ``"rfbe"``)."""
    if mode == "paired":
        return measure_paired(batch, **settings)
    return measure_training(mode, batch, **settings)


_CHILD = ("import json, sys; from medvlp_lib.eval.efficiency import measure; "
          "print(json.dumps(measure(**json.loads(sys.argv[1]))))")


def measure_in_subprocess(mode: str, batch: int, **settings) -> dict:
    """:func:`measure` (``mode``, ``batch``, ``settings``) in a fresh Python process with one OpenMP / MKL
    thread, importing this copy of the library. Returns its result, or ``{"mode", "batch", "error"}`` (the child's
    last line of stderr) if it failed."""
    kwargs = {"mode": mode, "batch": batch, **settings}
    lib_root = str(Path(__file__).resolve().parents[2])  # the folder holding medvlp_lib/
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([lib_root] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(kwargs)], capture_output=True, text=True,
                          env=env, cwd=lib_root)
    if proc.returncode != 0:
        err = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit code {proc.returncode}"
        return {"mode": mode, "batch": batch, "error": err}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def combine_repeats(reps: Sequence[dict]) -> dict:
    """One row from the repeated isolated measurements (processes) of one setting: times = the MEDIAN over repeats
    (each already the median of its steps), memory = the median over repeats (the upper one for an even count);
    every repeat's values are kept in ``*_all``. Rows with ``"error"`` are dropped (all failed: the first is
    returned)."""
    ok = [r for r in reps if "error" not in r]
    if not ok:
        return dict(reps[0])
    row = dict(ok[0])
    for key in ("cpu_ms_per_sample", "ms_per_sample", "s_per_step", "cpu_s_per_step"):
        row[key] = float(statistics.median(r[key] for r in ok))
    for key in ("peak_mb", "net_peak_mb", "train_mb", "runtime_mb", "base_mb"):
        row[key] = float(statistics.median_high(r[key] for r in ok))
    for key in ("cpu_ms_per_sample", "ms_per_sample", "peak_mb", "net_peak_mb", "loadavg_1min"):
        row[f"{key}_all"] = [r[key] for r in ok]
    row["loadavg_1min"] = float(statistics.median(r["loadavg_1min"] for r in ok))
    row["repeats"] = len(ok)
    return row


# ----------------------------------------------------------------------------------------------------
# the RFBE vs naive comparison
# ----------------------------------------------------------------------------------------------------
def rfbe_benchmark(batches: Sequence[int] = (32, 64, 128, 256, 512), *, sub_batch: int = 32, steps: int = 5,
                   repeats: int = 3, min_samples: int = 1280, size: int = 64, dim: int = 128, queue: int = 4096,
                   device: str = "cpu", arch: str = "small", progress: bool = True,
                   measure: Callable[..., dict] = measure_in_subprocess) -> dict:
    """Naive vs RFBE at every effective batch in ``batches``; ``repeats`` rounds, the jobs of a round interleaved
    (their order alternates between rounds) so that a burst of load on the shared machine does not hit one setting.

    Per round and batch, three processes (``measure``, default :func:`measure_in_subprocess`):

    * ``naive`` and ``rfbe`` alone (:func:`measure_training`, ``steps`` timed steps): their peak memory;
    * ``paired`` (:func:`measure_paired`): both set-ups in one process, steps alternating, ``max(steps,
      ceil(min_samples / batch))`` timed steps each: their time. Pairing within a process removes the
      process-to-process spread (which core, what else runs) that dominates a 5 % comparison on a shared machine.

    Rows (one per (batch, mode)): memory = median over rounds of the isolated runs (:func:`combine_repeats`; their
    own times are kept as ``*_isolated``); time (``cpu_ms_per_sample``, ``ms_per_sample``, ``*_all`` per round) =
    median over rounds of the paired runs' median step; on the RFBE rows ``cpu_time_ratio_vs_naive`` /
    ``wall_time_ratio_vs_naive`` = median over rounds of the ratio within each paired process,
    ``time_ratio_vs_naive`` (CPU on CPU, wall on CUDA), ``time_target`` and ``time_ok``. Returns the record that
    ``results/bench_rfbe.json`` holds without its provenance (settings, load averages, ``rows``, ``targets``).
    """
    batches = [int(b) for b in batches]
    _check_positive(sub_batch=sub_batch, steps=steps, repeats=repeats, min_samples=min_samples)
    if not batches or min(batches) < 1:
        raise ValueError(f"batches must be positive effective batch sizes, got {batches}")
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    from tqdm.auto import tqdm

    settings = dict(sub_batch=sub_batch, size=size, dim=dim, queue=queue, device=device, arch=arch)
    paired_steps = {b: max(steps, math.ceil(min_samples / b)) for b in batches}
    load_before = os.getloadavg()
    jobs = [(mode, b) for r in range(repeats) for b in batches
            for mode in (("naive", "rfbe", "paired") if r % 2 == 0 else ("paired", "rfbe", "naive"))]
    raw = [measure(mode, b, steps=paired_steps[b] if mode == "paired" else steps, **settings)
           for mode, b in tqdm(jobs, desc="bench_rfbe", disable=not progress)]
    load_after = os.getloadavg()
    cuda = device == "cuda"
    rows = []
    for b in batches:
        paired = [x for x in raw if x["mode"] == "paired" and x["batch"] == b and "error" not in x]
        for mode in ("naive", "rfbe"):
            row = combine_repeats([x for x in raw if x["mode"] == mode and x["batch"] == b])
            if "error" in row:
                rows.append(row)
                continue
            for key in ("cpu_ms_per_sample", "ms_per_sample", "s_per_step", "cpu_s_per_step",
                        "cpu_ms_per_sample_all", "ms_per_sample_all"):
                row[f"{key}_isolated"] = row.pop(key)
            if paired:
                for key in ("cpu_ms_per_sample", "ms_per_sample"):
                    row[f"{key}_all"] = [p[mode][key] for p in paired]
                    row[key] = float(statistics.median(row[f"{key}_all"]))
                row["cpu_s_per_step"], row["s_per_step"] = (row["cpu_ms_per_sample"] * b / 1e3,
                                                            row["ms_per_sample"] * b / 1e3)
                row["time_source"], row["paired_steps"], row["paired_repeats"] = "paired", paired_steps[b], len(paired)
            else:  # the paired runs failed: times of the isolated runs
                for key in ("cpu_ms_per_sample", "ms_per_sample", "s_per_step", "cpu_s_per_step"):
                    row[key] = row[f"{key}_isolated"]
                row["time_source"] = "isolated"
            rows.append(row)
        naive_row, rfbe_row = rows[-2], rows[-1]
        if "error" in naive_row or "error" in rfbe_row:
            continue
        if paired:
            cpu = float(statistics.median(p["cpu_ratio"] for p in paired))
            wall = float(statistics.median(p["wall_ratio"] for p in paired))
        else:
            cpu = rfbe_row["cpu_ms_per_sample"] / naive_row["cpu_ms_per_sample"]
            wall = rfbe_row["ms_per_sample"] / naive_row["ms_per_sample"]
        same_work = b <= sub_batch
        ratio = wall if cuda else cpu
        rfbe_row.update(cpu_time_ratio_vs_naive=cpu, wall_time_ratio_vs_naive=wall, time_ratio_vs_naive=ratio,
                        time_target=TIME_RATIO_SAME_WORK if same_work else TIME_RATIO_ABOVE,
                        time_ok=bool(ratio <= TIME_RATIO_SAME_WORK if same_work else ratio < TIME_RATIO_ABOVE))
    naive = {r["batch"]: r for r in rows if r["mode"] == "naive" and "error" not in r}
    rfbe = {r["batch"]: r for r in rows if r["mode"] == "rfbe" and "error" not in r}
    lo, hi = min(batches), max(batches)

    def ratio(table, key):
        return table[hi][key] / max(table[lo][key], 1e-9) if lo in table and hi in table else None

    mem_ratio, net_ratio = ratio(rfbe, "peak_mb"), ratio(rfbe, "net_peak_mb")
    time_ok = [r["time_ok"] for r in rows if "time_ok" in r]
    targets = {
        "rfbe_peak_ratio_max_vs_min_batch": mem_ratio, "rfbe_peak_ratio_target": MEM_RATIO_TARGET,
        "rfbe_memory_ok": None if mem_ratio is None else bool(mem_ratio <= MEM_RATIO_TARGET),
        "rfbe_net_peak_ratio_max_vs_min_batch": net_ratio,
        "rfbe_net_memory_ok": None if net_ratio is None else bool(net_ratio <= MEM_RATIO_TARGET),
        "rfbe_train_mb_ratio_max_vs_min_batch": ratio(rfbe, "train_mb"),
        "naive_peak_ratio_max_vs_min_batch": ratio(naive, "peak_mb"),
        "naive_net_peak_ratio_max_vs_min_batch": ratio(naive, "net_peak_mb"),
        "time_ratio_target": TIME_RATIO_SAME_WORK, "time_ratio_target_above_sub_batch": TIME_RATIO_ABOVE,
        "time_judged_on": "wall" if cuda else "process_cpu_time", "time_statistic": "median, paired",
        "rfbe_time_ok_all": bool(time_ok) and all(time_ok), "batches": [lo, hi],
    }
    return {"device": device, "threads": 1, "cpu_count": os.cpu_count(), "size": size, "dim": dim, "queue": queue,
            "sub_batch": sub_batch, "steps": steps, "repeats": repeats, "min_samples": min_samples,
            "paired_steps": paired_steps, "arch": arch, "chunk_views": True, "loadavg_before": list(load_before),
            "loadavg_after": list(load_after), "rows": rows, "targets": targets}


def format_rfbe_report(rec: dict) -> str:
    """The table and target lines of an :func:`rfbe_benchmark` record, as the benchmark prints them."""
    t, cuda = rec["targets"], rec["device"] == "cuda"
    lo, hi = t["batches"]
    mem_name = "CUDA max allocated" if cuda else "peak RSS of the child process"
    lines = [f"\nRFBE vs naive MSD training ({rec['device']}, one thread, {rec['size']} px, sub-batch "
             f"{rec['sub_batch']}, queue {rec['queue']}). peak = {mem_name}; net = peak minus the Python+torch "
             f"runtime measured before the model is built; train = peak above the RSS after building model and "
             f"optimiser (median of {rec['repeats']} processes each). time = {'wall' if cuda else 'process CPU'} time "
             f"per sample, median step of naive and RFBE alternating in one process ({rec['min_samples']}+ samples "
             f"each), median of {rec['repeats']} such processes; t/naive = median of the ratios within a process",
             f"{'batch':>6} {'mode':>6} {'peak MB':>8} {'net MB':>8} {'train MB':>9} {'cpu ms/s':>9} "
             f"{'wall ms/s':>10} {'t/naive':>8} {'target':>7} {'time ok':>8} {'load':>5}"]
    for r in rec["rows"]:
        if "error" in r:
            lines.append(f"{r['batch']:>6} {r['mode']:>6} error: {r['error']}")
            continue
        rt = f"{r['time_ratio_vs_naive']:.2f}" if "time_ratio_vs_naive" in r else "-"
        tg = ("<=" if r["batch"] <= rec["sub_batch"] else "<") + f"{r['time_target']:.2f}" if "time_target" in r \
            else "-"
        ok = ("yes" if r["time_ok"] else "NO") if "time_ok" in r else "-"
        lines.append(f"{r['batch']:>6} {r['mode']:>6} {r['peak_mb']:>8.0f} {r['net_peak_mb']:>8.0f} "
                     f"{r['train_mb']:>9.0f} {r['cpu_ms_per_sample']:>9.2f} {r['ms_per_sample']:>10.2f} {rt:>8} "
                     f"{tg:>7} {ok:>8} {r['loadavg_1min']:>5.1f}")

    def f(x):
        return "n/a" if x is None else f"{x:.2f}"

    def verdict(ok):
        return "n/a" if ok is None else ("met" if ok else "MISSED")

    same = [r for r in rec["rows"] if "time_ok" in r and r["batch"] <= rec["sub_batch"]]
    above = [r for r in rec["rows"] if "time_ok" in r and r["batch"] > rec["sub_batch"]]

    def ratios(rows):
        return ", ".join(f"{r['time_ratio_vs_naive']:.2f} at {r['batch']}" for r in rows) or "no such batch"

    def all_ok(rows):
        return verdict(all(r["time_ok"] for r in rows) if rows else None)
    lines += [
        f"\ntarget RFBE memory at batch {hi} / at batch {lo} <= {MEM_RATIO_TARGET}: net of runtime "
        f"{f(t['rfbe_net_peak_ratio_max_vs_min_batch'])} {verdict(t['rfbe_net_memory_ok'])}; whole process "
        f"{f(t['rfbe_peak_ratio_max_vs_min_batch'])} {verdict(t['rfbe_memory_ok'])} (naive: net "
        f"{f(t['naive_net_peak_ratio_max_vs_min_batch'])}, whole process {f(t['naive_peak_ratio_max_vs_min_batch'])})",
        f"target RFBE time / naive <= {TIME_RATIO_SAME_WORK} where it does naive's work (batch <= sub-batch "
        f"{rec['sub_batch']}): {ratios(same)} {all_ok(same)}",
        f"target RFBE time / naive < {TIME_RATIO_ABOVE} above the sub-batch: {ratios(above)} {all_ok(above)}",
        f"({t['time_judged_on']}, median) load average before {rec['loadavg_before'][0]:.2f}, after "
        f"{rec['loadavg_after'][0]:.2f} on {rec['cpu_count']} cores (wall-clock ratios depend on it; CPU-time "
        f"ratios much less)"]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# FLOPs
# ----------------------------------------------------------------------------------------------------
def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of ``fn()`` (forward and, if ``fn`` calls it, backward) as counted by
    ``torch.utils.flop_counter.FlopCounterMode``: matrix products, convolutions and attention (2 per
    multiply-add); element-wise work (norms, activations, softmax) is not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def adaptor_vs_clip_flops(image_encoder, text_encoder, images: torch.Tensor, texts: Sequence[str], *,
                          width: int = 768, num_heads: int = 12, adaptor_embed_dim: int = 512,
                          clip_embed_dim: int = 128, proj: str = "mlp") -> dict:
    """FLOPs per sample (:func:`count_flops`) of the three ways chapter 07 compares, on one batch:

    * ``clip_train``: one CLIP training step end to end (forward + backward through both backbones and heads);
    * ``cache_build``: one forward pass of both frozen backbones (the embedding cache, paid once);
    * ``adaptor_train``: one :class:`~medvlp_lib.methods.adaptor.AdaptorMethod` step (forward + backward) on the
      cached tokens (an Adaptor of ``width`` / ``num_heads`` / ``adaptor_embed_dim`` on the backbones' token widths;
      text tokens as the text encoder pads them, the Adaptor computing on the real ones).

    ``image_encoder`` / ``text_encoder``: trainable encoders of :mod:`medvlp_lib.models.encoders`
    (``forward_features`` / ``forward_tokens``); ``images`` [B, C, H, W], ``texts`` B strings (B >= 2). Returns the
    three counts, ``clip_over_adaptor`` (= clip_train / adaptor_train) and the token counts.
    """
    if len(texts) != len(images) or len(texts) < 2:
        raise ValueError(f"images and texts must hold the same number (>= 2) of samples, got {len(images)} and "
                         f"{len(texts)}")
    for name, enc in (("image_encoder", image_encoder), ("text_encoder", text_encoder)):
        if not any(p.requires_grad for p in enc.parameters()):
            raise ValueError(f"{name} is frozen; pass a trainable encoder (trainable='all') so that the end-to-end "
                             f"step back-propagates through it")
    n = len(texts)
    texts = list(texts)
    clip = CLIP(DualEncoder(image_encoder, text_encoder, embed_dim=clip_embed_dim, proj=proj))
    clip_flops = count_flops(lambda: clip.training_step({"image": images, "text": texts})["loss"].backward())
    clip.zero_grad(set_to_none=True)
    box = {}

    def build():
        with torch.no_grad():
            fmap = image_encoder.forward_features(images)
            image_encoder.pool(fmap)                                  # the pooled feature the cache also stores
            box["img"] = tokens_from_feature_map(fmap)
            box["txt"], box["mask"] = text_encoder.forward_tokens(texts)

    cache_flops = count_flops(build)
    adaptor = AdaptorMethod(Adaptor(int(box["img"].shape[-1]), int(box["txt"].shape[-1]), width=width,
                                    embed_dim=adaptor_embed_dim, num_heads=num_heads))
    batch = {"img_tokens": box["img"], "txt_tokens": box["txt"].float(), "txt_mask": box["mask"].bool()}
    adaptor_flops = count_flops(lambda: adaptor.training_step(batch)["loss"].backward())
    return {"clip_train": clip_flops / n, "cache_build": cache_flops / n, "adaptor_train": adaptor_flops / n,
            "clip_over_adaptor": clip_flops / max(adaptor_flops, 1), "image_tokens": int(box["img"].shape[1]),
            "text_tokens_padded": int(box["mask"].shape[1]),
            "text_tokens_mean": float(box["mask"].float().sum(1).mean())}
