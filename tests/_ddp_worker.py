"""One rank of the 2-process gloo check in ``tests/test_distributed.py`` (launched there with ``torchrun``).

Also imported by that test for :func:`run_scenario`, which builds and trains the same MSD / MSD+RFBE run in one
process (the reference on the concatenated batch). Usage: ``torchrun --standalone --nproc_per_node 2
tests/_ddp_worker.py OUT_DIR``; each rank writes ``OUT_DIR/<scenario>_rank<r>.pt`` (final state, the averaged
gradients of every step, the history) and rank 0 alone writes the run folders ``OUT_DIR/run_<scenario>``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from medvlp_lib.methods.msd import MSD
from medvlp_lib.methods.rfbe import RFBE
from medvlp_lib.models.toy import TOY_REPORTS, ToyDualEncoder
from medvlp_lib.train import fit

SCENARIOS = ("msd", "rfbe")
GLOBAL_BATCH, STEPS, QUEUE = 8, 3, 12  # 3 steps x 8 keys wrap the 12-row queues


class PairData(torch.utils.data.Dataset):
    """16 image-report pairs; ``__getitem__`` adds noise from the global torch RNG (seeded per sample by the trainer,
    so the noise is the same whichever rank reads the sample)."""

    def __init__(self, n: int = 16):
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, 1, 8, 8, generator=g, dtype=torch.float64)
        self.texts = [TOY_REPORTS[(3 * i) % len(TOY_REPORTS)] for i in range(n)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i] + 0.01 * torch.randn(1, 8, 8, dtype=torch.float64), "text": self.texts[i],
                "index": i}


class RecordingMSD(MSD):
    """MSD that keeps a copy of the (rank-averaged) gradients of every optimiser step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.grads: list[dict[str, torch.Tensor]] = []

    def after_optimizer_step(self) -> None:
        self.grads.append({n: p.grad.detach().clone() for n, p in self.online.named_parameters() if p.grad is not None})
        super().after_optimizer_step()


def build(name: str):
    torch.manual_seed(1)
    dual = ToyDualEncoder(8, channels=(4,), norm="groupnorm", dtype=torch.float64)
    msd = RecordingMSD(dual, queue_size=QUEUE, image_augment=None, text_augment=None)
    return msd, (RFBE(msd, sub_batch=2) if name == "rfbe" else msd)


def run_scenario(name: str, run_dir=None, num_workers: int = 0):
    """Train scenario ``name`` for :data:`STEPS` steps; return ``(msd, method, history)``."""
    msd, method = build(name)
    hist = fit(method, PairData(), batch_size=GLOBAL_BATCH, steps=STEPS, lr=1e-2, warmup_frac=0.0, seed=0,
               device="cpu", progress=False, run_dir=run_dir, ckpt_every=2 if run_dir else 0, num_workers=num_workers)
    return msd, method, hist


def main(out: Path) -> None:
    from medvlp_lib import train

    info = train.init_distributed(timeout_s=60)
    assert info.world_size == 2, info
    save = torch.save
    if info.rank != 0:  # only rank 0 may write files: any write by this rank fails the run

        def forbidden(*args, **kwargs):
            raise AssertionError(f"rank {info.rank} wrote a file")

        torch.save = forbidden
        train._atomic_write = forbidden
    for name in SCENARIOS:
        msd, method, hist = run_scenario(name, run_dir=out / f"run_{name}", num_workers=1 if name == "rfbe" else 0)
        save({"state": method.state_dict(), "grads": msd.grads, "history": hist}, out / f"{name}_rank{info.rank}.pt")

    class Plain:  # a batch source without __getitem__ cannot be split by sample
        def batch(self, step):
            return {}

        def __len__(self):
            return 1

    try:
        fit(build("msd")[1], Plain(), steps=1, lr=1e-2, device="cpu", progress=False)
    except TypeError as err:
        save({"error": str(err)}, out / f"plain_rank{info.rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
