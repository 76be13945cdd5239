"""The library's one trainer: AdamW, warm-up + cosine, tqdm, history, run folders, exact resume, DataLoader
workers, mixed precision and data parallelism over ``torch.distributed``.

The contract (see the helper brief): a *method* is an ``nn.Module`` with ``training_step(batch) -> dict``
holding ``"loss"`` (a tensor the trainer back-propagates) plus floats to log. A method that sets
``manual_backward = True`` has already called backward inside ``training_step`` (e.g. RFBE's gradient
accumulation) and returns ``"loss"`` as a float. The optional hook ``after_optimizer_step()`` runs after
every optimiser step (EMA updates, enqueueing). All method state lives in parameters / buffers, so
``state_dict`` checkpoints capture it.

Determinism (what is a pure function of what):

* the *global* batch of step ``s`` is ``batches.indices(s)`` (:class:`StepBatches`: a slice of the epoch's
  permutation of ``numpy.random.default_rng([seed, epoch])``) -- whatever the number of DataLoader workers
  or processes;
* before ``dataset[j]`` is read for position ``i`` of that global batch, Python's ``random``, NumPy's global
  RNG and torch's CPU generator are seeded from ``(seed, s, i)`` (:func:`data_seed`), so randomness inside
  ``__getitem__`` (augmentation) is the same in the main process, in any DataLoader worker and on any rank.
  A batch source without ``__getitem__`` (``.batch(step)`` only) is seeded once per step, from ``(seed, s)``;
* before the training step of ``s`` the global RNGs (all devices) are reseeded from :func:`step_seed`
  ``(seed, s, rank)``: randomness inside the method (augmentation of the batch tensor, dropout) is a function
  of the step (and, with more than one process, of the rank: rank 0 draws what one process draws, the
  others draw independent numbers, so ranks do not repeat each other's augmentations).

A run interrupted after N steps and resumed from its checkpoint therefore follows the same trajectory bit for
bit (on CPU) as an uninterrupted run; no RNG state needs to be saved. With ``torch.distributed`` each rank
takes its slice of the global batch of a step, so the global batch (and, for a method whose loss is a mean of
per-sample terms over a gathered key set, such as MSD, the loss and gradient) equals that of one process; see
:class:`Trainer` for what differs.
"""
from __future__ import annotations

import atexit
import contextlib
import datetime
import json
import logging
import math
import os
import random
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import default_collate
from tqdm.auto import tqdm

from .utils import amp_dtype, check_seed, get_device, git_commit, safe_torch_load, seed_everything

__all__ = ["fit", "warmup_cosine", "StepBatches", "Trainer", "step_seed", "data_seed", "param_groups", "move_to",
           "CHECKPOINT_VERSION", "CHECKPOINT_KEYS", "CheckpointError", "DistInfo", "dist_info", "init_distributed",
           "is_main_process", "RUN_FILE", "HISTORY_FILE", "read_run"]

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
CHECKPOINT_KEYS = ("version", "step", "history", "settings", "method", "optimizer", "scheduler", "scaler")
"""The keys of a trainer checkpoint dict (``scaler`` may be ``None``)."""
RUN_FILE = "run.json"
"""In a run folder: the settings, the progress (step, status, speed, ETA) and the provenance of the run."""
HISTORY_FILE = "history.jsonl"
"""In a run folder: one JSON object per optimiser step (the history :func:`fit` returns)."""
_CKPT_RE = re.compile(r"^ckpt_(\d{8})\.pt$")
_TMP_RE = re.compile(r"^ckpt_\d{8}\.pt\.tmp\d+$")
_DATA_TAG = 0x5EEDDA7A      # separates the data seeds from the step seeds (SeedSequence pads entropy with zeros)
_ETA_AFTER = 5              # steps timed (after the first, which pays for start-up) before the ETA is logged


class CheckpointError(ValueError):
    """A checkpoint file is damaged: unreadable, unsafe, or not a complete trainer checkpoint dict."""


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Learning-rate multiplier at 0-based ``step``: linear warm-up, then cosine decay to ``min_ratio``.

    ``step < warmup``: ``(step + 1) / warmup``; afterwards ``min_ratio + (1 - min_ratio) * (1 + cos(pi p)) / 2``
    with ``p = (step - warmup) / max(1, total - warmup)`` clipped to [0, 1].
    """
    if total <= 0:
        raise ValueError(f"total must be positive, got {total}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"min_ratio must be in [0, 1], got {min_ratio}")
    if step < warmup:
        return (step + 1) / warmup
    p = min(1.0, max(0.0, (step - warmup) / max(1, total - warmup)))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """A well-mixed 32-bit seed for the training step ``step`` on process ``rank`` (NumPy ``SeedSequence``).

    Rank 0 gets the seed of ``(seed, step)`` (what one process uses); rank ``r > 0`` that of ``(seed, step, r)``.
    """
    entropy = [check_seed(seed), check_seed(step, "step")] + ([check_seed(rank, "rank")] if rank else [])
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def data_seed(seed: int, step: int, position: int | None = None) -> int:
    """The seed of the CPU RNGs while item ``position`` of step ``step``'s global batch is read (``None``: while
    a batch source without ``__getitem__`` builds the whole batch). Distinct from every :func:`step_seed`."""
    entropy = [check_seed(seed), check_seed(step, "step")]
    entropy += [_DATA_TAG] if position is None else [check_seed(position, "position"), _DATA_TAG]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _seed_cpu_rngs(seed: int) -> None:
    """Python ``random``, NumPy's global RNG and torch's CPU generator (not CUDA: this runs in DataLoader workers)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)


def _default_collate(items):
    return default_collate(items)


class StepBatches:
    """Deterministic batches by global step: ``batch(step)`` = slice of the epoch's permutation.

    ``epoch = step // steps_per_epoch``; the permutation of ``range(len(dataset))`` is drawn from
    ``numpy.random.default_rng([seed, epoch])``, so any step's batch can be rebuilt without replaying the
    ones before it. ``drop_last=True`` drops the incomplete last batch of each epoch (fixed batch size).
    ``collate_fn`` defaults to torch's ``default_collate`` (tensors stacked, strings into lists).
    """

    def __init__(self, dataset, batch_size: int, seed: int = 0, drop_last: bool = True,
                 collate_fn: Callable | None = None):
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(f"dataset must support len() and indexing, got {type(dataset).__name__}")
        n = len(dataset)
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if n == 0:
            raise ValueError("dataset is empty")
        if drop_last and batch_size > n:
            raise ValueError(f"batch_size={batch_size} exceeds the dataset size {n} with drop_last=True")
        self.dataset, self.batch_size, self.seed, self.drop_last = dataset, int(batch_size), check_seed(seed), drop_last
        self.collate_fn = collate_fn or _default_collate
        self.steps_per_epoch = n // self.batch_size if drop_last else -(-n // self.batch_size)
        self._perm_cache: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.steps_per_epoch

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def permutation(self, epoch: int) -> np.ndarray:
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            self._perm_cache = (epoch, np.random.default_rng([self.seed, epoch]).permutation(len(self.dataset)))
        return self._perm_cache[1]

    def indices(self, step: int) -> np.ndarray:
        if not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        epoch, i = divmod(int(step), self.steps_per_epoch)
        return self.permutation(epoch)[i * self.batch_size:(i + 1) * self.batch_size]

    def batch(self, step: int):
        return self.collate_fn([self.dataset[int(j)] for j in self.indices(step)])


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on weight matrices / kernels only; none on biases, norm parameters
    (all 0-/1-D tensors) or temperatures (names ending in ``logit_scale``, ``temperature``, ``tau``)."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        if p.ndim <= 1 or leaf in ("logit_scale", "temperature", "tau", "log_tau"):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def move_to(batch, device: torch.device, non_blocking: bool = False):
    """Move every tensor in a (nested) dict / list / tuple to ``device``; other values are returned as is.
    ``non_blocking=True`` overlaps the copy of pinned host tensors with computation."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, dict):
        return {k: move_to(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in batch):
        return type(batch)(move_to(v, device, non_blocking) for v in batch)
    return batch


# ---- torch.distributed ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a ``torch.distributed`` job (``world_size`` 1: a single process)."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints, run files, logs and results."""
        return self.rank == 0


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def dist_info() -> DistInfo:
    """The initialised default process group (rank, world size, ``LOCAL_RANK``, backend), else a single process."""
    dist = _dist()
    if dist is None:
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_backend())


def is_main_process() -> bool:
    """True unless this is a ``torch.distributed`` rank other than 0 (only rank 0 writes files and results)."""
    return dist_info().is_main


def _launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "MASTER_ADDR" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(backend: str | None = None, timeout_s: float | None = None) -> DistInfo:
    """Join the ``torch.distributed`` job this process was launched in, if any; return :func:`dist_info`.

    Already initialised: nothing to do. Launched by ``torchrun`` (environment variables ``RANK``, ``WORLD_SIZE``
    > 1, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): ``init_process_group(init_method="env://")`` with
    ``backend`` (default: ``"nccl"`` when CUDA is available and ``MEDVLP_DEVICE`` does not force another device,
    else ``"gloo"``) and ``timeout_s`` (default torch's), and the group is destroyed at exit. Otherwise: a single
    process (no group). :class:`Trainer` calls this, so ``torchrun --nproc_per_node N script.py`` needs no code.
    """
    import torch.distributed as dist

    if _dist() is not None or not _launched_by_torchrun():
        return dist_info()
    if not dist.is_available():
        raise RuntimeError("launched by torchrun (WORLD_SIZE > 1) but this torch build has no torch.distributed")
    forced = os.environ.get("MEDVLP_DEVICE")
    if backend is None:
        cuda = torch.cuda.is_available() and (not forced or torch.device(forced).type == "cuda")
        backend = "nccl" if cuda else "gloo"
    kwargs = {} if timeout_s is None else {"timeout": datetime.timedelta(seconds=float(timeout_s))}
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend, init_method="env://", **kwargs)
    atexit.register(_destroy_group)
    return dist_info()


def _destroy_group() -> None:
    dist = _dist()
    if dist is not None:
        dist.destroy_process_group()


class _Stepper(nn.Module):
    """What DistributedDataParallel wraps: its forward is the method's ``training_step`` (so DDP's reducer sees
    the step as one forward and averages the gradients of the following ``loss.backward()``)."""

    def __init__(self, method: nn.Module):
        super().__init__()
        self.method = method

    def forward(self, batch):
        return self.method.training_step(batch)


def _identity(x):
    return x


class _StepSource(torch.utils.data.Dataset):
    """``source[step] -> (step, this rank's part of step's global batch)``: a pure function of (seed, step, rank).

    Map-style sources (:class:`StepBatches`): rank ``r`` of ``W`` reads positions ``r*b .. (r+1)*b - 1`` of the
    global batch ``indices(step)`` (``b = B / W``), each after seeding the CPU RNGs with :func:`data_seed`
    ``(seed, step, position)``, and collates them. Other sources: ``.batch(step)`` after seeding with
    ``data_seed(seed, step)`` (single process only). Used in-process or as the dataset of a DataLoader whose
    sampler yields the steps to run.
    """

    def __init__(self, batches, seed: int, rank: int = 0, world_size: int = 1):
        self.batches, self.seed, self.rank, self.world_size = batches, seed, rank, world_size
        self.items = isinstance(batches, StepBatches) and type(batches).batch is StepBatches.batch
        if world_size > 1 and not self.items:
            raise TypeError(f"torch.distributed training splits each step's global batch by sample, which needs a "
                            f"map-style dataset (fit(method, dataset, batch_size=...)) or a StepBatches; "
                            f"{type(batches).__name__} only has .batch(step)")

    def __len__(self) -> int:  # not used for sampling (the sampler yields steps); one epoch of steps
        return len(self.batches)

    def __getitem__(self, step: int):
        if not self.items:
            _seed_cpu_rngs(data_seed(self.seed, step))
            return step, self.batches.batch(step)
        idx = self.batches.indices(step)
        n, w = len(idx), self.world_size
        if n % w:
            raise ValueError(f"step {step}: the global batch of {n} samples does not split evenly over {w} "
                             f"processes; choose batch_size (and, with drop_last=False, the dataset size) as a "
                             f"multiple of the world size")
        b = n // w
        items = []
        for pos in range(self.rank * b, (self.rank + 1) * b):
            _seed_cpu_rngs(data_seed(self.seed, step, pos))
            items.append(self.batches.dataset[int(idx[pos])])
        return step, self.batches.collate_fn(items)


def _to_float(v: Any):
    if isinstance(v, torch.Tensor):
        return float(v.detach()) if v.numel() == 1 else None
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        return float(v)
    return None


class Trainer:
    """Train a method for a number of optimiser steps with exact checkpoint / resume.

    Optimiser: AdamW with :func:`param_groups` (no decay on biases / norms / temperatures). Schedule:
    :func:`warmup_cosine` over ``total_steps`` (per step, via ``LambdaLR``). ``grad_clip``: max global
    grad norm (``None`` = off; the norm is logged as ``grad_norm`` when on).

    Mixed precision (``amp``, :func:`~medvlp_lib.utils.amp_dtype`): ``None`` (default, full precision), ``"bf16"``
    (CUDA, or CPU autocast), ``"fp16"`` (CUDA, with a ``GradScaler`` whose state is checkpointed; refused for a
    ``manual_backward`` method, whose own backward passes could not be scaled) or ``"auto"`` (bf16 on a CUDA
    device that supports it, else off). The forward pass of ``training_step`` runs under ``torch.autocast``.

    Data (:meth:`fit`): ``num_workers > 0`` or ``pin_memory`` builds the batches in a
    ``torch.utils.data.DataLoader`` whose sampler yields the steps still to run, from the current (resumed) one;
    each worker builds whole batches, seeded per sample (see the module docstring), so histories and weights
    are identical for any ``num_workers``. ``pin_memory`` (default: on for a CUDA device, refused elsewhere)
    pins the host batches and copies them with ``non_blocking=True``.

    Checkpoints: with ``ckpt_dir`` (or ``run_dir``, which puts them in ``run_dir/checkpoints``) a checkpoint
    ``ckpt_<step>.pt`` is written atomically (temporary file + rename) every ``ckpt_every`` steps (``0``: only
    at the end of :meth:`fit`); the newest ``keep_last`` are kept and temporary files of killed writes are
    removed. It holds the method's ``state_dict``, optimiser, scheduler, scaler, step, history and the run's
    settings (:data:`CHECKPOINT_KEYS`), and is read with ``weights_only=True`` (a crafted pickle cannot run
    code). ``fit(resume=True)`` loads the newest *good* one (:meth:`resume`: damaged newer files are set aside
    with a warning). A run folder also holds :data:`RUN_FILE` (settings, data, engine, status, step, speed, ETA,
    git commit) and :data:`HISTORY_FILE`, rewritten at every checkpoint; :func:`read_run` reads them. Starting
    without ``resume=True`` in a run folder that holds checkpoints is refused (it would mix two runs).

    Data parallelism (``torch.distributed``): launched by ``torchrun`` (or with a process group already
    initialised) the trainer joins the group (:func:`init_distributed`; device ``cuda:LOCAL_RANK`` with NCCL,
    else the CPU with gloo), rank ``r`` of ``W`` takes its ``B / W`` samples of every global batch of ``B``, and
    gradients are averaged over the ranks: by ``DistributedDataParallel`` (``broadcast_buffers=False``; the
    forward it wraps is ``training_step``), or, for a ``manual_backward`` method (RFBE), once per optimiser step
    after all its sub-batch backward passes (a bucketed ``all_reduce``; no DDP hooks run during the sub-batches,
    the equivalent of ``DDP.no_sync()`` followed by one synchronised step). Parameters and buffers are broadcast
    from rank 0 before the first step; every rank steps the same optimiser on the same averaged gradients, so
    the models stay identical. Logged scalars are averaged over ranks (the history is the same on every rank);
    only rank 0 shows the bar, logs, and writes checkpoints and run files. What equals one process on the
    concatenated batch: the data (always); the loss and gradient when the method's loss is a mean of per-sample
    terms over keys it all-gathers (MSD, MM-MoCo, ALBEF and RFBE: :class:`~medvlp_lib.methods.msd.MSD` scores
    each rank's queries against the global batch's momentum keys, and the queues all-gather). What does not:
    losses whose negatives are the rank's own batch only (in-batch CLIP), BatchNorm statistics (per rank;
    rank 0's running statistics are saved), and randomness inside ``training_step`` (drawn per rank).
    """

    def __init__(self, method: nn.Module, lr: float = 1e-3, weight_decay: float = 0.1, warmup_steps: int = 0,
                 total_steps: int | None = None, ckpt_dir: str | os.PathLike | None = None, ckpt_every: int = 0,
                 grad_clip: float | None = None, device: torch.device | str | None = None, seed: int = 0,
                 progress: bool = True, min_lr_ratio: float = 0.0, keep_last: int = 2, betas=(0.9, 0.999),
                 eps: float = 1e-8, *, amp: str | None = None, num_workers: int = 0, pin_memory: bool | None = None,
                 run_dir: str | os.PathLike | None = None):
        if not isinstance(method, nn.Module) or not callable(getattr(method, "training_step", None)):
            raise TypeError(f"method must be an nn.Module with training_step(batch) -> dict, got {type(method).__name__}")
        if not (isinstance(lr, (int, float)) and lr > 0):
            raise ValueError(f"lr must be a positive float, got {lr!r}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if not isinstance(warmup_steps, (int, np.integer)) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be a non-negative integer, got {warmup_steps!r}")
        if total_steps is not None and (not isinstance(total_steps, (int, np.integer)) or total_steps <= 0):
            raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
        if not isinstance(ckpt_every, (int, np.integer)) or ckpt_every < 0:
            raise ValueError(f"ckpt_every must be a non-negative integer, got {ckpt_every!r}")
        if run_dir is not None and ckpt_dir is not None:
            raise ValueError(f"give run_dir (checkpoints go to run_dir/checkpoints) or ckpt_dir, not both; got "
                             f"run_dir={run_dir!s}, ckpt_dir={ckpt_dir!s}")
        self.run_dir = Path(run_dir) if run_dir is not None else None
        if self.run_dir is not None:
            ckpt_dir = self.run_dir / "checkpoints"
        if ckpt_every > 0 and ckpt_dir is None:
            raise ValueError("ckpt_every > 0 needs ckpt_dir (a folder for the checkpoints) or run_dir")
        if grad_clip is not None and grad_clip <= 0:
            raise ValueError(f"grad_clip must be positive or None, got {grad_clip}")
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers < 0:
            raise ValueError(f"num_workers must be a non-negative integer (DataLoader worker processes), got "
                             f"{num_workers!r}")
        if pin_memory is not None and not isinstance(pin_memory, bool):
            raise ValueError(f"pin_memory must be True, False or None (on for CUDA), got {pin_memory!r}")
        self.manual = bool(getattr(method, "manual_backward", False))
        if amp == "fp16" and self.manual:
            raise ValueError(f"amp='fp16' needs loss scaling (GradScaler), which {type(method).__name__} cannot use: "
                             f"it back-propagates inside training_step (manual_backward); use amp='bf16' or None")
        self.method = method
        wanted = torch.device(device) if device is not None else None
        self.dist = init_distributed(backend=None if wanted is None or wanted.type == "cuda" else "gloo")
        self.device = self._pick_device(wanted)
        self.amp, self.amp_dtype = amp, amp_dtype(amp, self.device)
        self.pin_memory = self.device.type == "cuda" if pin_memory is None else pin_memory
        if self.pin_memory and self.device.type != "cuda":
            raise ValueError(f"pin_memory=True pins host memory for copies to a CUDA device; the device is "
                             f"{self.device} (leave pin_memory=None)")
        self.num_workers = int(num_workers)
        self.lr, self.weight_decay, self.warmup_steps = float(lr), float(weight_decay), int(warmup_steps)
        self.total_steps = int(total_steps) if total_steps is not None else None
        self.ckpt_dir = Path(ckpt_dir) if ckpt_dir is not None else None
        self.ckpt_every, self.grad_clip, self.seed = int(ckpt_every), grad_clip, check_seed(seed)
        self.progress, self.min_lr_ratio, self.keep_last = progress, float(min_lr_ratio), int(keep_last)
        self.betas, self.eps = betas, eps
        self.step = 0
        self.elapsed = 0.0
        self.seconds_per_step: float | None = None
        self.history: list[dict] = []
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler = None
        self.scaler = None
        self.resumed_from: Path | None = None
        self._ddp = None
        self._data: dict = {}
        self._commit: str | None = None
        self.method.to(self.device)

    def _pick_device(self, wanted: torch.device | None) -> torch.device:
        if self.dist.enabled and (wanted is None and self.dist.backend == "nccl" or
                                  wanted is not None and wanted.type == "cuda" and wanted.index is None):
            wanted = torch.device("cuda", self.dist.local_rank)
        dev = wanted if wanted is not None else get_device()
        if dev.type == "cuda" and dev.index is not None:
            torch.cuda.set_device(dev)
        return dev

    # ---- setup -----------------------------------------------------------------------------------
    def _build_optim(self) -> None:
        groups = param_groups(self.method, self.weight_decay)
        if not groups:
            raise ValueError("method has no trainable parameters (every parameter has requires_grad=False)")
        self.optimizer = torch.optim.AdamW(groups, lr=self.lr, betas=self.betas, eps=self.eps)
        total, warmup, mr = self.total_steps, self.warmup_steps, self.min_lr_ratio
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_cosine(s, warmup, total, mr))
        if self.amp_dtype == torch.float16:
            self.scaler = torch.amp.GradScaler(self.device.type)

    # ---- checkpoints -----------------------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        """Existing checkpoints in ``ckpt_dir``, oldest first."""
        if self.ckpt_dir is None or not self.ckpt_dir.exists():
            return []
        found = [(int(m.group(1)), p) for p in self.ckpt_dir.iterdir() if (m := _CKPT_RE.match(p.name))]
        return [p for _, p in sorted(found)]

    def _settings(self) -> dict:
        return {"method": type(self.method).__name__, "seed": self.seed, "lr": self.lr,
                "weight_decay": self.weight_decay, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps, "min_lr_ratio": self.min_lr_ratio}

    def save_checkpoint(self) -> Path | None:
        """Write ``ckpt_<step>.pt`` atomically (temporary ``ckpt_<step>.pt.tmp<pid>`` + ``os.replace``), keep the
        newest ``keep_last`` and remove the temporary files that killed writes left behind. Only rank 0 writes
        (other ranks return ``None``)."""
        if self.ckpt_dir is None:
            raise ValueError("save_checkpoint needs ckpt_dir")
        if not self.dist.is_main:
            return None
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        state = {"version": CHECKPOINT_VERSION, "step": self.step, "history": self.history,
                 "settings": self._settings(), "method": self.method.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "scaler": self.scaler.state_dict() if self.scaler is not None else None}
        path = self.ckpt_dir / f"ckpt_{self.step:08d}.pt"
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, path)
        for old in self.checkpoints()[:-self.keep_last]:
            old.unlink(missing_ok=True)
        for stale in self.ckpt_dir.iterdir():  # ours was renamed above: any left is from a killed write
            if _TMP_RE.match(stale.name):
                stale.unlink(missing_ok=True)
        return path

    @staticmethod
    def read_checkpoint(path: str | os.PathLike) -> dict:
        """Read and check a checkpoint file without applying it: a dict with every key of
        :data:`CHECKPOINT_KEYS` and this :data:`CHECKPOINT_VERSION`.

        Read with ``torch.load(weights_only=True)`` (:func:`~medvlp_lib.utils.safe_torch_load`): a file holding
        anything but tensors and plain containers is refused, nothing in it runs. Raises
        :class:`CheckpointError` naming the file and what is wrong (unreadable / unsafe / not a dict / other
        version / missing key / wrong type); ``FileNotFoundError`` if it does not exist.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        try:
            state = safe_torch_load(path, "checkpoint")
        except ValueError as err:
            raise CheckpointError(f"{err}; delete it to restart") from err
        if not isinstance(state, dict):
            raise CheckpointError(f"checkpoint {path} is not a medvlp trainer checkpoint (a {type(state).__name__}, "
                                  f"expected a dict with keys {list(CHECKPOINT_KEYS)})")
        if state.get("version") != CHECKPOINT_VERSION:
            raise CheckpointError(f"checkpoint {path} is not a medvlp trainer checkpoint (version "
                                  f"{state.get('version')!r}, expected {CHECKPOINT_VERSION})")
        missing = [k for k in CHECKPOINT_KEYS if k not in state]
        if missing:
            raise CheckpointError(f"checkpoint {path} is incomplete: missing key(s) {missing}; a trainer checkpoint "
                                  f"holds {list(CHECKPOINT_KEYS)}")
        types = {"step": int, "history": list, "settings": dict, "method": dict, "optimizer": dict,
                 "scheduler": dict}
        for key, typ in types.items():
            if not isinstance(state[key], typ) or (key == "step" and (isinstance(state[key], bool) or state[key] < 0)):
                raise CheckpointError(f"checkpoint {path}: key {key!r} holds {type(state[key]).__name__} "
                                      f"{state[key] if key == 'step' else ''!s}, expected {typ.__name__}"
                                      f"{' >= 0' if key == 'step' else ''}")
        return state

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore method, optimiser, scheduler, scaler, step and history from ``path``.

        A damaged file (see :meth:`read_checkpoint`) raises :class:`CheckpointError`; a checkpoint of another
        run (different settings, or parameters that do not fit the method) raises ``ValueError``. Both name
        the file.
        """
        path = Path(path)
        state = self.read_checkpoint(path)
        saved, now = state["settings"], self._settings()
        diff = {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}
        if diff:
            raise ValueError(f"checkpoint {path} was written by a different run; settings differ "
                             f"(saved, current): {diff}")
        try:
            self.method.load_state_dict(state["method"])
        except RuntimeError as err:
            raise ValueError(f"checkpoint {path} does not match this method's parameters/buffers: {err}") from err
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.scaler is not None and state["scaler"] is not None:
                self.scaler.load_state_dict(state["scaler"])
        except (KeyError, ValueError, RuntimeError, TypeError) as err:
            raise ValueError(f"checkpoint {path}: optimiser / scheduler state does not fit this run "
                             f"({type(err).__name__}: {err})") from err
        self.step = int(state["step"])
        self.history = list(state["history"])

    def resume(self) -> Path | None:
        """Load the newest *good* checkpoint of ``ckpt_dir``; return its path (``None``: no checkpoint, start fresh).

        Damaged checkpoints newer than it (:class:`CheckpointError`: e.g. truncated by a full disk, or not a
        trainer file) are renamed to ``<name>.corrupt`` (kept for inspection, no longer picked up; by rank 0)
        and a warning names them and the one used; resuming from an older step loses only the steps after it and
        follows the same trajectory (batches and RNGs are functions of the step). If every checkpoint is
        damaged, :class:`CheckpointError` lists them. A checkpoint of another run raises ``ValueError`` at once.
        """
        if self.optimizer is None:
            self._build_optim()
        bad: list[tuple[Path, CheckpointError]] = []
        for path in reversed(self.checkpoints()):
            try:
                self.load_checkpoint(path)
            except CheckpointError as err:
                bad.append((path, err))
                continue
            except FileNotFoundError:  # renamed to *.corrupt by rank 0 meanwhile
                continue
            if bad and self.dist.is_main:
                for p, _ in bad:
                    os.replace(p, p.with_name(p.name + ".corrupt"))
                warnings.warn(f"resume: damaged checkpoint(s) {[p.name for p, _ in bad]} in {self.ckpt_dir} "
                              f"(renamed to *.corrupt; newest: {bad[0][1]}); resumed from {path} (step {self.step}), "
                              f"the newest good checkpoint", RuntimeWarning, stacklevel=3)
            self.resumed_from = path
            return path
        if bad:
            raise CheckpointError(f"resume: no usable checkpoint in {self.ckpt_dir}; every one is damaged: "
                                  + "; ".join(str(e) for _, e in bad))
        return None

    # ---- torch.distributed -----------------------------------------------------------------------
    def _comm_device(self) -> torch.device:
        return self.device if self.dist.backend == "nccl" else torch.device("cpu")

    def _join_ranks(self) -> None:
        """Check every rank is at the same step, broadcast rank 0's parameters and buffers, wrap in DDP."""
        import torch.distributed as dist

        t = torch.tensor([self.step, -self.step], dtype=torch.long, device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        if int(t[0]) != -int(t[1]):
            raise RuntimeError(f"rank {self.dist.rank}: the ranks start at different steps ({-int(t[1])} .. "
                               f"{int(t[0])}); every rank must see the same checkpoints ({self.ckpt_dir})")
        with torch.no_grad():
            for tensor in list(self.method.parameters()) + list(self.method.buffers()):
                dist.broadcast(tensor.data, src=0)
        if not self.manual and self._ddp is None:
            from torch.nn.parallel import DistributedDataParallel

            self._ddp = DistributedDataParallel(
                _Stepper(self.method), device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False)

    def _mean_over_ranks(self, loss_value: float, scalars: dict) -> tuple[float, dict]:
        import torch.distributed as dist

        keys = sorted(scalars)
        t = torch.tensor([loss_value] + [scalars[k] for k in keys], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        vals = (t / self.dist.world_size).tolist()
        return vals[0], dict(zip(keys, vals[1:]))

    def _average_gradients(self, bucket_numel: int = 1 << 24) -> None:
        """Average ``.grad`` over ranks once (bucketed ``all_reduce``): the manual-backward methods' sync point."""
        import torch.distributed as dist

        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=self._comm_device())
        dist.all_reduce(has, op=dist.ReduceOp.MAX)
        for p, h in zip(params, has.tolist()):
            if h and p.grad is None:  # no gradient here but on another rank: ours is zero
                p.grad = torch.zeros_like(p)
        groups: dict[tuple, list[torch.Tensor]] = {}
        for p in params:
            if p.grad is not None:
                groups.setdefault((p.grad.device, p.grad.dtype), []).append(p.grad)
        for grads in groups.values():
            i = 0
            while i < len(grads):
                bucket, n = [], 0
                while i < len(grads) and (not bucket or n + grads[i].numel() <= bucket_numel):
                    bucket.append(grads[i])
                    n += grads[i].numel()
                    i += 1
                flat = torch.cat([g.reshape(-1) for g in bucket])
                dist.all_reduce(flat)
                flat.div_(self.dist.world_size)
                o = 0
                for g in bucket:
                    g.copy_(flat[o:o + g.numel()].view_as(g))
                    o += g.numel()

    # ---- training --------------------------------------------------------------------------------
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _one_step(self, batch) -> dict:
        method, opt, manual = self.method, self.optimizer, self.manual
        opt.zero_grad(set_to_none=True)
        with self._autocast():
            out = self._ddp(batch) if self._ddp is not None else method.training_step(batch)
        if not isinstance(out, dict) or "loss" not in out:
            raise TypeError(f"{type(method).__name__}.training_step must return a dict with 'loss', got "
                            f"{type(out).__name__}")
        loss = out["loss"]
        if manual:
            loss_value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        else:
            if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
                raise TypeError("training_step returned a 'loss' without gradient; return a graph-connected tensor "
                                "or set manual_backward = True on the method")
            loss_value = float(loss.detach())
        scalars = {k: f for k, v in out.items() if k != "loss" and (f := _to_float(v)) is not None}
        if self.dist.enabled:
            loss_value, scalars = self._mean_over_ranks(loss_value, scalars)
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"non-finite loss {loss_value} at step {self.step}")
        if not manual:
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
            else:
                loss.backward()
        elif self.dist.enabled:
            self._average_gradients()
        if self.scaler is not None:
            self.scaler.unscale_(opt)
        record = {"step": self.step, "loss": loss_value, "lr": opt.param_groups[0]["lr"]}
        if self.grad_clip is not None:
            params = [p for g in opt.param_groups for p in g["params"]]
            record["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, self.grad_clip))
        if self.scaler is not None:
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()
        self.scheduler.step()
        hook = getattr(method, "after_optimizer_step", None)
        if callable(hook):
            hook()
        record.update(scalars)
        return record

    def _batch_iter(self, source: _StepSource, start: int, stop: int):
        """``(step, batch)`` for ``start <= step < stop``: in this process, or from a DataLoader whose sampler
        yields the steps (workers build whole batches; order is kept)."""
        if start >= stop:
            return iter(())
        if self.num_workers == 0 and not self.pin_memory:
            return (source[s] for s in range(start, stop))
        loader = torch.utils.data.DataLoader(
            source, batch_size=None, sampler=range(start, stop), num_workers=self.num_workers,
            pin_memory=self.pin_memory, collate_fn=_identity,
            generator=torch.Generator().manual_seed(self.seed))  # leaves the global RNG alone
        return iter(loader)

    def _say(self, msg: str) -> None:
        if self.dist.is_main:
            logger.info(msg)

    def _data_info(self, batches) -> dict:
        info = {"source": type(batches).__name__,
                "steps_per_epoch": len(batches) if hasattr(batches, "__len__") else None}
        if isinstance(batches, StepBatches):
            info.update(batch_size=batches.batch_size, dataset_size=len(batches.dataset),
                        dataset=type(batches.dataset).__name__, drop_last=batches.drop_last)
        return info

    def _engine_info(self) -> dict:
        return {"device": str(self.device), "amp": self.amp,
                "amp_dtype": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else None,
                "world_size": self.dist.world_size, "backend": self.dist.backend, "num_workers": self.num_workers,
                "pin_memory": self.pin_memory, "ckpt_every": self.ckpt_every, "keep_last": self.keep_last,
                "grad_clip": self.grad_clip, "betas": list(self.betas), "eps": self.eps}

    def _check_run_file(self) -> None:
        """Resuming in a run folder: the data must be batched as when it was written (same global batches)."""
        if self.run_dir is None or not (self.run_dir / RUN_FILE).exists():
            return
        try:
            saved = json.loads((self.run_dir / RUN_FILE).read_text()).get("data", {})
        except (OSError, ValueError, AttributeError) as err:
            raise ValueError(f"{self.run_dir / RUN_FILE} is unreadable ({err}); delete it to resume") from err
        diff = {k: (saved.get(k), v) for k, v in self._data.items() if k in saved and saved.get(k) != v}
        if diff:
            raise ValueError(f"run folder {self.run_dir}: the data are batched differently from the run being "
                             f"resumed (saved, current): {diff}; resume with the same data and batch_size, or "
                             f"start a new run_dir")

    def _write_run(self, status: str, steps: int, started: str, history: bool = False) -> None:
        if self.run_dir is None or not self.dist.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        eta = self.seconds_per_step * max(0, steps - self.step) if self.seconds_per_step is not None else None
        info = {"format": 1, "status": status, "method": type(self.method).__name__, "step": self.step,
                "steps": steps, "settings": self._settings(), "data": self._data, "engine": self._engine_info(),
                "started": started, "updated": _now(), "elapsed_s": round(self.elapsed, 3),
                "seconds_per_step": self.seconds_per_step, "eta_s": eta, "git_commit": self._commit,
                "resumed_from": str(self.resumed_from.relative_to(self.run_dir)) if self.resumed_from else None,
                "checkpoints": "checkpoints", "history": HISTORY_FILE}
        if history:
            _atomic_write(self.run_dir / HISTORY_FILE, "".join(json.dumps(r) + "\n" for r in self.history))
        _atomic_write(self.run_dir / RUN_FILE, json.dumps(info, indent=1) + "\n")

    def fit(self, batches, steps: int | None = None, resume: bool = False) -> list[dict]:
        """Train until the global step count reaches ``steps`` (default ``total_steps``); return the history.

        ``batches`` needs ``.batch(step)`` (:class:`StepBatches`, or any source of whole batches; with more than one
        process it must be a :class:`StepBatches`). With ``resume=True`` the newest good checkpoint in ``ckpt_dir``
        is loaded first (:meth:`resume`; if none exists training starts from step 0); calling ``fit`` again on the
        same trainer continues from its current step. History entries: ``step`` (0-based), ``loss``, ``lr`` and
        every scalar the method returned. Logs (logger ``medvlp_lib.train``, INFO, rank 0) the steps to run before
        training and the speed and estimated time to finish after the first few steps; the progress bar shows
        both too.
        """
        if not callable(getattr(batches, "batch", None)):
            raise TypeError(f"batches must have a .batch(step) method (e.g. StepBatches), got {type(batches).__name__}")
        if steps is None:
            steps = self.total_steps
        if steps is None or not isinstance(steps, (int, np.integer)) or steps <= 0:
            raise ValueError(f"steps must be a positive integer (or set total_steps), got {steps!r}")
        if self.total_steps is None:
            self.total_steps = int(steps)
        if steps > self.total_steps:
            raise ValueError(f"steps={steps} exceeds total_steps={self.total_steps} of the learning-rate schedule")
        if resume and self.ckpt_dir is None:
            raise ValueError("resume=True needs ckpt_dir or run_dir")
        source = _StepSource(batches, self.seed, self.dist.rank, self.dist.world_size)
        self._data = self._data_info(batches)
        if self.optimizer is None:
            if resume:
                if self.resume() is not None:
                    self._check_run_file()
            else:
                if self.run_dir is not None and self.checkpoints():
                    raise ValueError(f"run folder {self.run_dir} already holds checkpoints (newest "
                                     f"{self.checkpoints()[-1].name}); pass resume=True to continue that run, or "
                                     f"choose a new run_dir")
                self._build_optim()
            if self.dist.enabled:
                self._join_ranks()
        self._commit = git_commit() if self.run_dir is not None and self.dist.is_main else None
        self.method.train()
        name, start, started = type(self.method).__name__, self.step, _now()
        if start < steps:
            self.seconds_per_step = None  # timed afresh in every call that trains
            per_rank = ""
            if self.dist.enabled and "batch_size" in self._data:
                per_rank = (f", global batch {self._data['batch_size']} = {self.dist.world_size} ranks x "
                            f"{self._data['batch_size'] // self.dist.world_size}")
            amp = f", amp {self._engine_info()['amp_dtype']}" if self.amp_dtype is not None else ""
            workers = f", {self.num_workers} loader workers" if self.num_workers else ""
            self._say(f"{name}: {steps - start} steps to run (step {start} -> {steps} of {self.total_steps}) on "
                      f"{self.device}{per_rank}{amp}{workers}")
        self._write_run("running", steps, started)
        bar = tqdm(total=steps, initial=min(self.step, steps), desc=name,
                   disable=not (self.progress and self.dist.is_main), dynamic_ncols=True)
        t0 = time.perf_counter()
        t_first = None
        it = self._batch_iter(source, self.step, steps)
        try:
            for step, batch in it:
                if step != self.step:
                    raise RuntimeError(f"batch of step {step} arrived at step {self.step}")
                seed_everything(step_seed(self.seed, step, self.dist.rank))
                batch = move_to(batch, self.device, non_blocking=self.pin_memory)
                record = self._one_step(batch)
                self.history.append(record)
                self.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
                now, done = time.perf_counter(), self.step - start
                self.elapsed = now - t0
                if done == 1:
                    t_first = now
                elif done > 1 and (done - 1 == _ETA_AFTER or self.step == steps) and self.seconds_per_step is None:
                    self.seconds_per_step = (now - t_first) / (done - 1)
                    if self.step < steps:
                        left = steps - self.step
                        self._say(f"{name}: {self.seconds_per_step:.3g} s/step; about "
                                  f"{_duration(self.seconds_per_step * left)} for the remaining {left} steps")
                if self.ckpt_every and self.step % self.ckpt_every == 0:
                    self.save_checkpoint()
                    self._write_run("running", steps, started, history=True)
        except BaseException as err:
            with contextlib.suppress(OSError):  # never hide the error itself
                self._write_run(f"failed at step {self.step}: {type(err).__name__}", steps, started, history=True)
            raise
        finally:
            bar.close()
            del it  # stops the loader's workers
        self.elapsed = time.perf_counter() - t0
        if self.ckpt_dir is not None and self.dist.is_main and (
                not self.checkpoints() or int(_CKPT_RE.match(self.checkpoints()[-1].name).group(1)) != self.step):
            self.save_checkpoint()
        self._write_run("finished" if self.step >= self.total_steps else "stopped", steps, started, history=True)
        if self.dist.enabled:
            import torch.distributed as dist

            dist.barrier()  # rank 0's files exist when fit returns on any rank
        return self.history


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_run(run_dir: str | os.PathLike) -> dict:
    """A run folder's :data:`RUN_FILE` as a dict, with ``"history"`` replaced by the list of records of
    :data:`HISTORY_FILE` (``[]`` before the first checkpoint). ``FileNotFoundError`` names the folder."""
    run_dir = Path(run_dir)
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: {RUN_FILE} is missing (written by fit(run_dir=...))")
    try:
        info = json.loads(path.read_text())
        hist = run_dir / HISTORY_FILE
        info["history"] = [json.loads(ln) for ln in hist.read_text().splitlines() if ln] if hist.exists() else []
    except ValueError as err:
        raise ValueError(f"run folder {run_dir}: {RUN_FILE} or {HISTORY_FILE} is not valid JSON ({err})") from err
    return info


def fit(method: nn.Module, data, *, lr: float, steps: int | None = None, epochs: float | None = None,
        batch_size: int | None = None, weight_decay: float = 0.1, warmup_frac: float = 0.05,
        min_lr_ratio: float = 0.0, seed: int = 0, collate_fn: Callable | None = None, ckpt_dir=None,
        ckpt_every: int = 0, resume: bool = False, grad_clip: float | None = None, progress: bool = True,
        device=None, betas=(0.9, 0.999), eps: float = 1e-8, run_dir=None, keep_last: int = 2,
        num_workers: int = 0, pin_memory: bool | None = None, amp: str | None = None) -> list[dict]:
    """The library's one training entry point: train ``method`` on ``data``; returns the per-step history.

    ``data``: a map-style dataset (``__getitem__``; batched here by :class:`StepBatches` with ``batch_size``,
    capped at the dataset size, ``seed`` and ``collate_fn``) or a batch source without ``__getitem__`` that has
    ``.batch(step)`` and ``len()`` = steps per epoch (:class:`StepBatches`,
    :class:`~medvlp_lib.data.pathology.SlideBatches`). Length: exactly one of ``steps`` or
    ``epochs`` (``steps = max(1, round(epochs * steps_per_epoch))``). Schedule: AdamW (:func:`param_groups`),
    linear warm-up over ``int(warmup_frac * steps)`` steps (at least 1 when ``warmup_frac > 0``), then cosine
    decay to ``min_lr_ratio`` (:func:`warmup_cosine`).

    Workstation engine (see :class:`Trainer`): ``run_dir`` (a run folder: checkpoints every ``ckpt_every`` steps
    and at the end, :data:`RUN_FILE`, :data:`HISTORY_FILE`; ``resume=True`` continues it exactly, a run folder
    with checkpoints is never restarted silently), ``num_workers`` / ``pin_memory`` (DataLoader; results do not
    depend on them), ``amp`` (``None``, ``"bf16"``, ``"fp16"``, ``"auto"``). Under ``torchrun`` every process
    calls ``fit`` with the same arguments: ``batch_size`` is the *global* batch (a multiple of the number of
    processes), each takes its share, gradients are averaged, and only rank 0 writes files.
    """
    if (steps is None) == (epochs is None):
        raise ValueError(f"give exactly one of steps or epochs, got steps={steps!r}, epochs={epochs!r}")
    if callable(getattr(data, "batch", None)) and not hasattr(data, "__getitem__"):
        if batch_size is not None or collate_fn is not None:
            raise ValueError("batch_size / collate_fn apply to a dataset; data already yields batches (.batch(step))")
        batches = data
    else:
        if batch_size is None:
            raise ValueError("batch_size is required when data is a dataset")
        if not hasattr(data, "__len__"):
            raise TypeError(f"data must be a map-style dataset or have .batch(step), got {type(data).__name__}")
        batches = StepBatches(data, min(int(batch_size), len(data)), seed=seed, collate_fn=collate_fn)
    if epochs is not None:
        if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not epochs > 0:
            raise ValueError(f"epochs must be a positive number, got {epochs!r}")
        steps = max(1, int(round(epochs * len(batches))))
    if not isinstance(warmup_frac, (int, float)) or not 0.0 <= warmup_frac < 1.0:
        raise ValueError(f"warmup_frac must be in [0, 1), got {warmup_frac!r}")
    warmup = max(1, int(warmup_frac * steps)) if warmup_frac > 0 else 0
    trainer = Trainer(method, lr=lr, weight_decay=weight_decay, warmup_steps=warmup, total_steps=steps,
                      ckpt_dir=ckpt_dir, ckpt_every=ckpt_every, grad_clip=grad_clip, device=device, seed=seed,
                      progress=progress, min_lr_ratio=min_lr_ratio, betas=betas, eps=eps, keep_last=keep_last,
                      amp=amp, num_workers=num_workers, pin_memory=pin_memory, run_dir=run_dir)
    return trainer.fit(batches, steps=steps, resume=resume)
