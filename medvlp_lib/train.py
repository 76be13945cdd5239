"""A small trainer shared by every chapter: AdamW, warm-up + cosine, tqdm, history, checkpoint / exact resume.

The contract (see the helper brief): a *method* is an ``nn.Module`` with ``training_step(batch) -> dict``
holding ``"loss"`` (a tensor the trainer back-propagates) plus floats to log. A method that sets
``manual_backward = True`` has already called backward inside ``training_step`` (e.g. RFBE's gradient
accumulation) and returns ``"loss"`` as a float. The optional hook ``after_optimizer_step()`` runs after
every optimiser step (EMA updates, enqueueing). All method state lives in parameters / buffers, so
``state_dict`` checkpoints capture it.

Determinism: batches come from ``batches.batch(step)`` (a pure function of seed and step, see
:class:`StepBatches`) and the global torch / numpy / Python RNGs are reseeded from ``(seed, step)``
before every step. A run interrupted after N steps and resumed from its checkpoint therefore follows the
same trajectory bit for bit (on CPU) as an uninterrupted run; no RNG state needs to be saved.
"""
from __future__ import annotations

import math
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import default_collate
from tqdm.auto import tqdm

from .utils import autocast, check_seed, get_device, safe_torch_load, seed_everything

__all__ = ["fit", "warmup_cosine", "StepBatches", "Trainer", "step_seed", "param_groups", "move_to",
           "CHECKPOINT_VERSION", "CHECKPOINT_KEYS", "CheckpointError"]

CHECKPOINT_VERSION = 1
CHECKPOINT_KEYS = ("version", "step", "history", "settings", "method", "optimizer", "scheduler", "scaler")
"""The keys of a trainer checkpoint dict (``scaler`` may be ``None``)."""
_CKPT_RE = re.compile(r"^ckpt_(\d{8})\.pt$")
_TMP_RE = re.compile(r"^ckpt_\d{8}\.pt\.tmp\d+$")


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


def step_seed(seed: int, step: int) -> int:
    """A well-mixed 32-bit seed for ``(seed, step)`` (NumPy ``SeedSequence``)."""
    return int(np.random.SeedSequence([check_seed(seed), check_seed(step, "step")]).generate_state(1)[0])


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


def move_to(batch, device: torch.device):
    """Move every tensor in a (nested) dict / list / tuple to ``device``; other values are returned as is."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in batch):
        return type(batch)(move_to(v, device) for v in batch)
    return batch


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
    grad norm (``None`` = off; the norm is logged as ``grad_norm`` when on). AMP: only on CUDA through
    :func:`medvlp_lib.utils.autocast` (float16 uses a ``GradScaler`` unless the method does its own backward).

    Checkpoints: with ``ckpt_dir`` and ``ckpt_every > 0`` a checkpoint ``ckpt_<step>.pt`` is written
    atomically (temporary file + rename) every ``ckpt_every`` steps and at the end of :meth:`fit`; the
    newest ``keep_last`` are kept and temporary files of killed writes are removed. It holds the method's
    ``state_dict``, optimiser, scheduler, scaler, step, history and the run's settings
    (:data:`CHECKPOINT_KEYS`), and is read with ``weights_only=True`` (a crafted pickle cannot run code).
    ``fit(resume=True)`` loads the newest *good* one (:meth:`resume`: damaged newer files are set aside with
    a warning).
    """

    def __init__(self, method: nn.Module, lr: float = 1e-3, weight_decay: float = 0.1, warmup_steps: int = 0,
                 total_steps: int | None = None, ckpt_dir: str | os.PathLike | None = None, ckpt_every: int = 0,
                 grad_clip: float | None = None, device: torch.device | str | None = None, seed: int = 0,
                 progress: bool = True, min_lr_ratio: float = 0.0, keep_last: int = 2, betas=(0.9, 0.999),
                 eps: float = 1e-8):
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
        if ckpt_every > 0 and ckpt_dir is None:
            raise ValueError("ckpt_every > 0 needs ckpt_dir (a folder for the checkpoints)")
        if grad_clip is not None and grad_clip <= 0:
            raise ValueError(f"grad_clip must be positive or None, got {grad_clip}")
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.method = method
        self.device = torch.device(device) if device is not None else get_device()
        self.lr, self.weight_decay, self.warmup_steps = float(lr), float(weight_decay), int(warmup_steps)
        self.total_steps = int(total_steps) if total_steps is not None else None
        self.ckpt_dir = Path(ckpt_dir) if ckpt_dir is not None else None
        self.ckpt_every, self.grad_clip, self.seed = int(ckpt_every), grad_clip, check_seed(seed)
        self.progress, self.min_lr_ratio, self.keep_last = progress, float(min_lr_ratio), int(keep_last)
        self.betas, self.eps = betas, eps
        self.step = 0
        self.elapsed = 0.0
        self.history: list[dict] = []
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler = None
        self.scaler = None
        self.method.to(self.device)

    # ---- setup -----------------------------------------------------------------------------------
    def _build_optim(self) -> None:
        groups = param_groups(self.method, self.weight_decay)
        if not groups:
            raise ValueError("method has no trainable parameters (every parameter has requires_grad=False)")
        self.optimizer = torch.optim.AdamW(groups, lr=self.lr, betas=self.betas, eps=self.eps)
        total, warmup, mr = self.total_steps, self.warmup_steps, self.min_lr_ratio
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_cosine(s, warmup, total, mr))
        manual = bool(getattr(self.method, "manual_backward", False))
        if self.device.type == "cuda" and not torch.cuda.is_bf16_supported() and not manual:
            self.scaler = torch.amp.GradScaler("cuda")

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

    def save_checkpoint(self) -> Path:
        """Write ``ckpt_<step>.pt`` atomically (temporary ``ckpt_<step>.pt.tmp<pid>`` + ``os.replace``), keep the
        newest ``keep_last`` and remove the temporary files that killed writes left behind."""
        if self.ckpt_dir is None:
            raise ValueError("save_checkpoint needs ckpt_dir")
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
        trainer file) are renamed to ``<name>.corrupt`` (kept for inspection, no longer picked up) and a
        warning names them and the one used; resuming from an older step loses only the steps after it and
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
            if bad:
                for p, _ in bad:
                    os.replace(p, p.with_name(p.name + ".corrupt"))
                warnings.warn(f"resume: damaged checkpoint(s) {[p.name for p, _ in bad]} in {self.ckpt_dir} "
                              f"(renamed to *.corrupt; newest: {bad[0][1]}); resumed from {path} (step {self.step}), "
                              f"the newest good checkpoint", RuntimeWarning, stacklevel=3)
            return path
        if bad:
            raise CheckpointError(f"resume: no usable checkpoint in {self.ckpt_dir}; every one is damaged: "
                                  + "; ".join(str(e) for _, e in bad))
        return None

    # ---- training --------------------------------------------------------------------------------
    def _one_step(self, batch) -> dict:
        method, opt = self.method, self.optimizer
        manual = bool(getattr(method, "manual_backward", False))
        opt.zero_grad(set_to_none=True)
        with autocast(self.device):
            out = method.training_step(batch)
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
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"non-finite loss {loss_value} at step {self.step}")
        if not manual:
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
            else:
                loss.backward()
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
        for k, v in out.items():
            if k != "loss" and (f := _to_float(v)) is not None:
                record[k] = f
        return record

    def fit(self, batches, steps: int | None = None, resume: bool = False) -> list[dict]:
        """Train until the global step count reaches ``steps`` (default ``total_steps``); return the history.

        ``batches`` needs ``.batch(step)``. With ``resume=True`` the newest good checkpoint in ``ckpt_dir`` is
        loaded first (:meth:`resume`; if none exists training starts from step 0); calling ``fit`` again on the same
        trainer continues from its current step. History entries: ``step`` (0-based), ``loss``, ``lr`` and
        every scalar the method returned.
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
            raise ValueError("resume=True needs ckpt_dir")
        if self.optimizer is None:
            if resume:
                self.resume()
            else:
                self._build_optim()
        self.method.train()
        bar = tqdm(total=steps, initial=min(self.step, steps), desc=type(self.method).__name__,
                   disable=not self.progress, dynamic_ncols=True)
        t0 = time.perf_counter()
        try:
            while self.step < steps:
                seed_everything(step_seed(self.seed, self.step))
                batch = move_to(batches.batch(self.step), self.device)
                record = self._one_step(batch)
                self.history.append(record)
                self.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
                if self.ckpt_every and self.step % self.ckpt_every == 0:
                    self.save_checkpoint()
        finally:
            bar.close()
        self.elapsed = time.perf_counter() - t0
        if self.ckpt_dir is not None and (not self.checkpoints() or
                                          int(_CKPT_RE.match(self.checkpoints()[-1].name).group(1)) != self.step):
            self.save_checkpoint()
        return self.history


def fit(method: nn.Module, data, *, lr: float, steps: int | None = None, epochs: float | None = None,
        batch_size: int | None = None, weight_decay: float = 0.1, warmup_frac: float = 0.05,
        min_lr_ratio: float = 0.0, seed: int = 0, collate_fn: Callable | None = None, ckpt_dir=None,
        ckpt_every: int = 0, resume: bool = False, grad_clip: float | None = None, progress: bool = True,
        device=None, betas=(0.9, 0.999), eps: float = 1e-8) -> list[dict]:
    """The library's one training entry point: train ``method`` on ``data``; returns the per-step history.

    ``data``: a map-style dataset (``__getitem__``; batched here by :class:`StepBatches` with ``batch_size``,
    capped at the dataset size, ``seed`` and ``collate_fn``) or a batch source without ``__getitem__`` that has
    ``.batch(step)`` and ``len()`` = steps per epoch (:class:`StepBatches`,
    :class:`~medvlp_lib.data.pathology.SlideBatches`). Length: exactly one of ``steps`` or
    ``epochs`` (``steps = max(1, round(epochs * steps_per_epoch))``). Schedule: AdamW (:func:`param_groups`),
    linear warm-up over ``int(warmup_frac * steps)`` steps (at least 1 when ``warmup_frac > 0``), then cosine
    decay to ``min_lr_ratio`` (:func:`warmup_cosine`). Checkpoints / exact resume / AMP / gradient clipping:
    see :class:`Trainer`.
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
                      progress=progress, min_lr_ratio=min_lr_ratio, betas=betas, eps=eps)
    return trainer.fit(batches, steps=steps, resume=resume)
