"""Momentum (EMA) encoders and a feature queue that accepts any batch size.

Momentum contrast (MoCo, He et al. 2020) and ALBEF (Li et al. 2021) keep a *key* encoder whose
parameters are an exponential moving average of the online (query) encoder,

    theta_k <- m * theta_k + (1 - m) * theta_q,           (m = 0.995 in MSD/ALBEF)

and a FIFO queue of recent momentum keys that serves as extra negatives (MoCo) or as the support set of
the soft targets (MSD). Both are gradient free, which is what RFBE (``methods/rfbe.py``) exploits.

Differences from the reference implementations, on purpose:

* ALBEF/MoCo assert ``queue_size % batch_size == 0``; :class:`MomentumQueue` takes any batch size,
  wraps around, and keeps only the newest ``size`` rows when a batch is larger than the queue.
* The queue stores each key's *sample id* (the dataset index), so a query whose own (stale) key is
  still in the queue can mask it or count it as a positive. The embedded IU X-Ray corpus has only about
  3,900 reports, so with a 4,096 queue this happens every epoch.
* Everything lives in buffers, so ``state_dict`` saves and restores the queue exactly.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

__all__ = ["ema_update_", "momentum_schedule", "MomentumEncoder", "MomentumQueue", "concat_all_gather",
           "gather_with_offset"]


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, m: float) -> None:
    """In place: ``p_t <- m * p_t + (1 - m) * p_o`` for every parameter; buffers are copied.

    Buffers (BatchNorm running statistics, counters) are copied from ``online`` rather than averaged,
    as in MoCo v3 / timm's ``ModelEmaV2`` for non-float buffers; copying keeps integer buffers valid.
    Parameters and buffers are matched by name; a mismatch raises ``ValueError``.

    ``m = 0`` makes ``target`` a copy of ``online``; ``m = 1`` leaves it unchanged.
    """
    m = float(m)
    if not 0.0 <= m <= 1.0 or math.isnan(m):
        raise ValueError(f"momentum m must be in [0, 1], got {m}")
    t_params = dict(target.named_parameters())
    o_params = dict(online.named_parameters())
    if t_params.keys() != o_params.keys():
        missing = sorted(set(o_params) ^ set(t_params))[:5]
        raise ValueError(f"ema_update_: target and online have different parameters (e.g. {missing}); "
                         "the target must be a deepcopy of the online module")
    for name, p_o in o_params.items():
        p_t = t_params[name]
        if p_t.shape != p_o.shape:
            raise ValueError(f"ema_update_: parameter {name!r} has shape {tuple(p_t.shape)} in target "
                             f"but {tuple(p_o.shape)} in online")
        if m == 1.0:
            continue
        if m == 0.0:
            p_t.copy_(p_o)
        else:
            p_t.mul_(m).add_(p_o.detach().to(p_t.dtype), alpha=1.0 - m)
    t_bufs = dict(target.named_buffers())
    for name, b_o in online.named_buffers():
        if name not in t_bufs:
            raise ValueError(f"ema_update_: buffer {name!r} of online is missing in target")
        t_bufs[name].copy_(b_o)


def momentum_schedule(step: int, total: int, m0: float, m1: float = 1.0) -> float:
    """Cosine increase of the momentum from ``m0`` (step 0) to ``m1`` (step ``total``), as in BYOL.

    ``m(step) = m1 - (m1 - m0) * (1 + cos(pi * step / total)) / 2``; steps beyond ``total`` give ``m1``.
    Use ``m1 = m0`` (or skip the schedule) for the constant momentum the MSD paper uses (0.995).
    """
    if total <= 0:
        raise ValueError(f"total must be a positive number of steps, got {total}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    for name, v in (("m0", m0), ("m1", m1)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {v}")
    frac = min(step, total) / total
    return float(m1 - (m1 - m0) * (1.0 + math.cos(math.pi * frac)) / 2.0)


class MomentumEncoder(nn.Module):
    """A frozen deep copy of ``online`` updated only by :meth:`update` (EMA); never receives gradients.

    ``forward`` and any attribute access go to the copy (``enc.encode_image(x)`` works when ``online``
    is a dual encoder) and always run under ``torch.no_grad()`` through :meth:`__call__`/``forward``.
    The copy follows the parent's train/eval mode module by module *as the online model would*: encoders
    that keep frozen normalisation layers in eval mode (:class:`~medvlp_lib.models.encoders.ImageEncoder`)
    would otherwise see every parameter of the copy as frozen and put all of its BatchNorms in eval mode, so
    momentum keys would use running statistics while the online queries use batch statistics (for a
    backbone trained from scratch the two disagree badly and the momentum methods cannot learn). Modules
    that hold trainable parameters in ``online`` at construction are put back in train mode with the parent.
    """

    def __init__(self, online: nn.Module):
        super().__init__()
        if not isinstance(online, nn.Module):
            raise TypeError(f"online must be an nn.Module, got {type(online).__name__}")
        self._trainable_in_online = frozenset(
            name for name, mod in online.named_modules()
            if any(p.requires_grad for p in mod.parameters(recurse=False)))
        self.module = copy.deepcopy(online)
        for p in self.module.parameters():
            p.requires_grad_(False)
            p.grad = None
        self.train(online.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            for name, mod in self.module.named_modules():
                if name in self._trainable_in_online:
                    mod.training = True
        return self

    @torch.no_grad()
    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def run(self, fn_name: str, *args, **kwargs):
        """Call ``self.module.<fn_name>(*args, **kwargs)`` without gradients (e.g. ``"encode_text"``)."""
        return getattr(self.module, fn_name)(*args, **kwargs)

    def update(self, online: nn.Module, m: float) -> None:
        """One EMA step towards ``online`` (see :func:`ema_update_`)."""
        ema_update_(self.module, online, m)


def concat_all_gather(x: torch.Tensor) -> torch.Tensor:
    """All-gather ``x`` along dim 0 across processes when ``torch.distributed`` is initialised.

    Single process: returns ``x`` unchanged. Requires equal per-rank batch sizes (as MoCo does).
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


def gather_with_offset(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(rows of every process in rank order, row where this process's rows start)``.

    With ``torch.distributed`` initialised (world size W, equal ``len(x)`` on every rank) this is
    ``(concat_all_gather(x), rank * len(x))``: the *global* batch as one process would hold it, and the offset of
    this rank's slice in it. Single process: ``(x, 0)``. No gradient flows through the gathered copy.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    return concat_all_gather(x), dist.get_rank() * x.shape[0]


class MomentumQueue(nn.Module):
    """FIFO queue of ``size`` feature rows (``dim`` wide) with their int64 sample ids.

    Buffers (all saved by ``state_dict``): ``feats [size, dim]``, ``sample_ids [size]`` (``-1`` for
    empty slots), ``ptr`` (next write slot) and ``filled`` (number of valid rows). The public methods
    are :meth:`enqueue`, :meth:`keys` and :meth:`ids` (both return only filled slots, as copies, so a
    later enqueue cannot alter tensors saved for backward), ``len(queue)`` and :meth:`reset`.

    Any batch size is accepted: writes wrap around the end, and a batch larger than the queue keeps its
    newest (last) ``size`` rows. With ``gather_distributed=True`` (default) the batch is all-gathered
    across processes first when ``torch.distributed`` is initialised.
    """

    def __init__(self, dim: int, size: int = 4096, dtype: torch.dtype = torch.float32,
                 gather_distributed: bool = True):
        super().__init__()
        if not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"size must be a positive int (queue length), got {size!r}")
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype, got {dtype}")
        self.dim, self.size, self.gather_distributed = dim, size, gather_distributed
        self.register_buffer("feats", torch.zeros(size, dim, dtype=dtype))
        self.register_buffer("sample_ids", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, size={self.size}, filled={int(self.filled)}"

    def __len__(self) -> int:
        return int(self.filled)

    @torch.no_grad()
    def reset(self) -> None:
        self.feats.zero_()
        self.sample_ids.fill_(-1)
        self.ptr.zero_()
        self.filled.zero_()

    @torch.no_grad()
    def enqueue(self, feats: torch.Tensor, ids: torch.Tensor | None = None) -> None:
        """Append ``feats [n, dim]`` (detached, cast to the queue dtype) with ``ids [n]`` (int64).

        ``ids=None`` stores ``-1`` (unknown sample), which never matches a real query id.
        """
        if not isinstance(feats, torch.Tensor):
            raise TypeError(f"feats must be a torch.Tensor, got {type(feats).__name__}")
        if feats.ndim != 2 or feats.shape[1] != self.dim:
            raise ValueError(f"feats must have shape [n, {self.dim}], got {tuple(feats.shape)}")
        if not feats.dtype.is_floating_point:
            raise TypeError(f"feats must be a floating tensor, got dtype {feats.dtype}")
        n = feats.shape[0]
        if ids is None:
            ids = torch.full((n,), -1, dtype=torch.long, device=feats.device)
        if not isinstance(ids, torch.Tensor):
            ids = torch.as_tensor(ids)
        if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.is_complex():
            raise TypeError(f"ids must be an integer tensor of sample ids, got dtype {ids.dtype}")
        if ids.ndim != 1 or ids.shape[0] != n:
            raise ValueError(f"ids must have shape [{n}] (one id per feature row), got {tuple(ids.shape)}")
        if self.gather_distributed:
            feats = concat_all_gather(feats)
            ids = concat_all_gather(ids)
            n = feats.shape[0]
        if n == 0:
            return
        feats = feats.detach().to(device=self.feats.device, dtype=self.feats.dtype)
        ids = ids.detach().to(device=self.sample_ids.device, dtype=torch.long)
        ptr = int(self.ptr)
        if n > self.size:  # keep only the newest `size` rows, written where they would have landed
            start = (ptr + n - self.size) % self.size
            feats, ids = feats[-self.size:], ids[-self.size:]
        else:
            start = ptr
        k = feats.shape[0]
        slots = (start + torch.arange(k, device=self.feats.device)) % self.size
        self.feats[slots] = feats
        self.sample_ids[slots] = ids
        self.ptr.fill_((ptr + n) % self.size)
        self.filled.fill_(min(int(self.filled) + n, self.size))

    def keys(self) -> torch.Tensor:
        """The filled rows ``[filled, dim]`` (a copy). Row order is slot order, not age order."""
        return self.feats[: int(self.filled)].clone()

    def ids(self) -> torch.Tensor:
        """Sample ids of the filled rows ``[filled]`` (int64, a copy), aligned with :meth:`keys`."""
        return self.sample_ids[: int(self.filled)].clone()
