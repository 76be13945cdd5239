"""Resource-free batch enlargement (RFBE, arXiv 2512.02438): batch 512 for the memory of batch 32.

The momentum (key) branch needs no gradients, so its activations are freed as soon as each key is
computed. RFBE exploits this in two passes over an effective batch of ``B`` samples:

1. **keys**: the momentum encoders embed all ``B`` key views, ``sub_batch`` rows at a time, under
   ``torch.no_grad()``; the keys (``B x D`` floats) plus a snapshot of the queues form the key set.
2. **queries**: for each sub-batch of ``b`` rows the online encoders embed the query views, the loss of
   those queries against the *full* key set is computed, scaled by ``b / B`` and back-propagated
   immediately, freeing that sub-batch's activations. Gradients accumulate in ``.grad``.

Every loss in :mod:`medvlp_lib.methods.msd` is a mean over queries of a per-query term that depends
only on that query and the (gradient-free) key set, so ``sum_subbatches (b/B) * mean_subbatch =
mean_full`` and the accumulated gradient equals the full-batch gradient exactly (up to floating-point
summation order; ``tests/test_rfbe.py`` checks relative error <= 1e-6 in float64). The trainer then
does ONE optimiser step, and the method's ``after_optimizer_step`` ONE EMA update and ONE enqueue.

What breaks the equality: anything that couples the samples of a batch *inside the online encoder*.
BatchNorm in training mode normalises with per-sub-batch statistics, so each query's embedding depends
on which sub-batch it landed in (and its gradient includes terms through the batch mean/variance of
that sub-batch only). GroupNorm/LayerNorm (per-sample statistics) or BatchNorm in eval mode restore
exact equality. (BatchNorm in the *momentum* encoder, train mode, makes the keys themselves
depend on the chunking of pass 1; the equality above is about the query branch for a given key set.)
Peak memory is that of one sub-batch of the query branch plus the inputs and ``B`` keys; with
``chunk_views=True`` the augmentation temporaries are also those of one sub-batch.
"""
from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from .msd import Views, combine_losses

__all__ = ["rfbe_step", "RFBE", "SupportsRFBE", "chunked_views"]


class SupportsRFBE(Protocol):
    """What :func:`rfbe_step` needs from a method (``medvlp_lib.methods.msd.MSD`` implements it)."""
    w_uni: float
    w_multi: float

    def make_views(self, batch: dict): ...

    def compute_keys(self, views, chunk: int | None = None): ...

    def query_loss(self, views, keys, start: int = 0, end: int | None = None) -> tuple[torch.Tensor, dict]: ...

    def set_pending(self, views, keys) -> None: ...


def chunked_views(method: SupportsRFBE, batch: dict, chunk: int):
    """``method.make_views`` applied to consecutive ``chunk``-row slices of ``batch``, concatenated.

    Augmentation is per sample, so this gives views of the same distribution as one call on the whole batch,
    but its temporaries (sampling grids, jitter, noise) scale with ``chunk`` instead of the effective batch,
    as in a data loader that augments sample by sample. The random draws are consumed in a different order,
    so the views differ from ``make_views(batch)`` under the same seed.
    """
    n = len(batch["text"])
    parts = []
    for s in range(0, n, chunk):
        sub = {k: (v[s:s + chunk] if isinstance(v, (torch.Tensor, list, tuple)) and len(v) == n else v)
               for k, v in batch.items()}
        parts.append(method.make_views(sub))
    if len(parts) == 1:
        return parts[0]
    return Views(torch.cat([p.img_q for p in parts]), torch.cat([p.img_k for p in parts]),
                 [t for p in parts for t in p.txt_q], [t for p in parts for t in p.txt_k],
                 torch.cat([p.ids for p in parts]))


def _weighted_sum(values: list, weights: list[float]) -> float:
    """``sum_i w_i v_i`` of the logged values of the sub-batches as a float, read from the device once per step
    (not once per sub-batch); a single value is returned as it is."""
    if len(values) == 1:
        return float(values[0])
    if all(isinstance(v, torch.Tensor) for v in values):
        v = torch.stack([t.reshape(()) for t in values])
        return float((v * v.new_tensor(weights)).sum())
    return sum(float(v) * w for v, w in zip(values, weights))


def rfbe_step(method: SupportsRFBE, batch: dict, sub_batch: int = 32, chunk_views: bool = False) -> dict:
    """One RFBE forward/backward over ``batch``; gradients are accumulated in the parameters' ``.grad``.

    Returns a dict of floats for logging (``"loss"`` = the full-batch loss value, ``"sub_batches"``).
    Does not zero gradients, step the optimiser, update the EMA or enqueue: the trainer zeroes and
    steps, and ``method.after_optimizer_step()`` does the EMA update and the enqueue.

    ``chunk_views=True`` builds the augmented views ``sub_batch`` rows at a time (see :func:`chunked_views`),
    so augmentation temporaries do not grow with the effective batch either; the default builds them in one
    call, which makes the step's views identical to ``method.training_step``'s under the same seed (what the
    gradient-equivalence test compares).
    """
    if not isinstance(sub_batch, int) or isinstance(sub_batch, bool) or sub_batch <= 0:
        raise ValueError(f"sub_batch must be a positive int, got {sub_batch!r}")
    views = chunked_views(method, batch, sub_batch) if chunk_views else method.make_views(batch)
    b_total = len(views)
    if b_total == 0:
        raise ValueError("rfbe_step got an empty batch")
    keys = method.compute_keys(views, chunk=sub_batch)          # pass 1: no gradients
    losses, parts, weights = [], [], []
    for start in range(0, b_total, sub_batch):                  # pass 2: query branch, accumulate
        end = min(start + sub_batch, b_total)
        w = (end - start) / b_total
        loss, p = method.query_loss(views, keys, start, end)
        (loss if w == 1.0 else loss * w).backward()             # one sub-batch: exactly the plain step's graph
        losses.append(loss.detach())
        parts.append(p)
        weights.append(w)
    method.set_pending(views, keys)
    out = {k: _weighted_sum([p[k] for p in parts], weights) for k in parts[0]}
    if len(parts) > 1 and "loss_uni" in out and "loss_multi" in out:  # ratios: recompute from the averaged losses
        _, shares = combine_losses(torch.tensor(out["loss_uni"], dtype=torch.float64),
                                   torch.tensor(out["loss_multi"], dtype=torch.float64),
                                   method.w_uni, method.w_multi)
        out["uni_share"], out["multi_share"] = float(shares["uni_share"]), float(shares["multi_share"])
    out.update(loss=_weighted_sum(losses, weights), sub_batches=len(losses), effective_batch=b_total)
    return out


class RFBE(nn.Module):
    """Wrap a method (e.g. :class:`~medvlp_lib.methods.msd.MSD`) so each trainer step is an RFBE step.

    ``chunk_views``: build augmented views sub-batch by sub-batch (see :func:`rfbe_step`).
    ``manual_backward = True``: :meth:`training_step` has already back-propagated and returns ``"loss"``
    as a float. :meth:`after_optimizer_step` forwards to the wrapped method (one EMA update, one
    enqueue). The wrapped method is ``self.method`` (state_dict keys are prefixed ``method.``).
    """
    manual_backward = True

    def __init__(self, method: nn.Module, sub_batch: int = 32, chunk_views: bool = False):
        super().__init__()
        for attr in ("make_views", "compute_keys", "query_loss", "set_pending"):
            if not hasattr(method, attr):
                raise TypeError(f"method must implement the RFBE protocol (make_views, compute_keys, "
                                f"query_loss, set_pending); {type(method).__name__} lacks {attr!r}")
        if not isinstance(sub_batch, int) or sub_batch <= 0:
            raise ValueError(f"sub_batch must be a positive int, got {sub_batch!r}")
        self.method = method
        self.sub_batch = sub_batch
        self.chunk_views = bool(chunk_views)

    def training_step(self, batch: dict) -> dict:
        out = rfbe_step(self.method, batch, self.sub_batch, chunk_views=self.chunk_views)
        if hasattr(self.method, "current_momentum"):
            out["momentum"] = self.method.current_momentum()
        if hasattr(self.method, "image_queue"):
            out["queue_filled"] = len(self.method.image_queue)
        return out

    def after_optimizer_step(self) -> None:
        hook = getattr(self.method, "after_optimizer_step", None)
        if hook is not None:
            hook()

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.method.encode_image(x)

    def encode_text(self, texts) -> torch.Tensor:
        return self.method.encode_text(texts)

    @property
    def scale(self) -> torch.Tensor:
        """The wrapped method's similarity multiplier (1/temperature)."""
        return self.method.scale
