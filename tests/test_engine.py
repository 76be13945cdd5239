"""The workstation engine under train.fit: DataLoader workers, pinned memory, mixed precision, run folders, ETA."""
from __future__ import annotations

import json
import logging
import random

import numpy as np
import pytest
import torch
from torch import nn

from medvlp_lib.train import (HISTORY_FILE, RUN_FILE, StepBatches, Trainer, data_seed, fit, read_run, step_seed)
from medvlp_lib.utils import amp_dtype


class NoisyData(torch.utils.data.Dataset):
    """``__getitem__`` draws from all three global RNGs (torch, NumPy, Python), like an augmenting loader."""

    def __init__(self, n: int = 30):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 6, generator=g)
        self.y = (self.x[:, :1] > 0).float()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        noise = 0.1 * torch.randn(6) + 0.05 * float(np.random.normal()) + 0.05 * random.random()
        return {"x": self.x[i] + noise, "y": self.y[i], "index": i}


class DropMethod(nn.Module):
    """Dropout + noise from the reseeded global RNG in the step, an EMA buffer in the hook."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.2), nn.Linear(8, 1))
        self.register_buffer("ema", torch.zeros(1))
        self.dtypes: list[torch.dtype] = []

    def training_step(self, batch):
        logits = self.net(batch["x"] + 0.05 * torch.randn_like(batch["x"]))
        self.dtypes.append(logits.dtype)
        loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), batch["y"])
        return {"loss": loss, "x_sum": float(batch["x"].sum())}

    def after_optimizer_step(self):
        with torch.no_grad():
            self.ema.mul_(0.9).add_(0.1 * self.net[0].weight.mean())


def _trainer(**kw):
    torch.manual_seed(5)
    method = DropMethod()
    args = dict(lr=0.05, warmup_steps=2, total_steps=10, device="cpu", seed=3, progress=False)
    args.update(kw)
    return method, Trainer(method, **args)


def _same(a: nn.Module, b: nn.Module):
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_workers_give_the_same_history_and_weights():
    ref_m, ref = _trainer()
    ref_hist = ref.fit(StepBatches(NoisyData(), 6, seed=3), steps=10)
    for workers in (1, 2):
        m, tr = _trainer(num_workers=workers)
        hist = tr.fit(StepBatches(NoisyData(), 6, seed=3), steps=10)
        assert hist == ref_hist, f"num_workers={workers}"
        _same(ref_m, m)
    # the test can fail: the data noise matters (another seed, another history)
    _, other = _trainer(seed=4, num_workers=2)
    assert other.fit(StepBatches(NoisyData(), 6, seed=3), steps=2)[1]["x_sum"] != ref_hist[1]["x_sum"]


def test_fit_with_workers_equals_fit_without():
    runs = []
    for workers in (0, 2):
        torch.manual_seed(5)
        m = DropMethod()
        runs.append((m, fit(m, NoisyData(), batch_size=6, steps=6, lr=0.05, seed=1, device="cpu", progress=False,
                            num_workers=workers)))
    assert runs[0][1] == runs[1][1]
    _same(runs[0][0], runs[1][0])


def test_exact_resume_with_workers(tmp_path):
    ref_m, ref = _trainer()
    ref_hist = ref.fit(StepBatches(NoisyData(), 6, seed=3), steps=10)
    _, first = _trainer(num_workers=2, run_dir=tmp_path / "run", ckpt_every=4)
    first.fit(StepBatches(NoisyData(), 6, seed=3), steps=7)  # stopped after 7 steps: newest checkpoint is step 7
    torch.manual_seed(99)
    m2 = DropMethod()  # other initial weights: everything comes from the checkpoint
    again = Trainer(m2, lr=0.05, warmup_steps=2, total_steps=10, device="cpu", seed=3, progress=False,
                    num_workers=2, run_dir=tmp_path / "run", ckpt_every=4)
    hist = again.fit(StepBatches(NoisyData(), 6, seed=3), steps=10, resume=True)
    assert again.resumed_from.name == "ckpt_00000007.pt"
    assert hist == ref_hist
    _same(ref_m, m2)


class PlainBatches:
    """A batch source without ``__getitem__`` whose batches use NumPy's global RNG."""

    def __len__(self):
        return 5

    def batch(self, step):
        x = torch.as_tensor(np.random.normal(size=(4, 6)), dtype=torch.float32) + step
        return {"x": x, "y": (x[:, :1] > step).float()}


def test_batch_source_without_getitem_keeps_working_with_workers():
    hists = []
    for workers in (0, 2):
        torch.manual_seed(5)
        m = DropMethod()
        hists.append(fit(m, PlainBatches(), steps=6, lr=0.05, seed=2, device="cpu", progress=False,
                         num_workers=workers))
    assert hists[0] == hists[1] and len(hists[0]) == 6
    assert len({h["x_sum"] for h in hists[0]}) == 6


def test_seeds_are_distinct_streams():
    seeds = {step_seed(0, s) for s in range(50)} | {step_seed(0, s, rank=1) for s in range(50)}
    seeds |= {data_seed(0, s) for s in range(50)} | {data_seed(0, s, p) for s in range(50) for p in range(4)}
    assert len(seeds) == 50 * 7
    assert step_seed(3, 7, rank=0) == step_seed(3, 7)


def test_loader_arguments_are_checked():
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="num_workers"):
            _trainer(num_workers=bad)
    with pytest.raises(ValueError, match="pin_memory=True .* CUDA"):
        _trainer(pin_memory=True)
    with pytest.raises(ValueError, match="pin_memory must be"):
        _trainer(pin_memory="yes")
    assert _trainer()[1].pin_memory is False  # default: on for CUDA only


# ---- mixed precision ------------------------------------------------------------------------------------
def test_amp_switch_values():
    assert amp_dtype(None, "cpu") is None and amp_dtype("off", "cpu") is None
    assert amp_dtype("auto", "cpu") is None  # auto: bf16 on a CUDA device that has it, else full precision
    assert amp_dtype("bf16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="fp16.*CUDA"):
        amp_dtype("fp16", "cpu")
    for bad in ("fp32", "bfloat16", True):
        with pytest.raises(ValueError, match="amp must be one of"):
            amp_dtype(bad, "cpu")
    with pytest.raises(ValueError, match="amp must be one of"):
        _trainer(amp="half")


def test_cpu_bf16_autocast_trains_and_off_stays_float32():
    m, tr = _trainer(amp="bf16")
    hist = tr.fit(StepBatches(NoisyData(), 6, seed=3), steps=6)
    assert set(m.dtypes) == {torch.bfloat16} and tr.scaler is None
    assert all(np.isfinite(h["loss"]) for h in hist) and m.net[0].weight.dtype == torch.float32
    for amp in (None, "auto"):
        m, tr = _trainer(amp=amp)
        tr.fit(StepBatches(NoisyData(), 6, seed=3), steps=2)
        assert set(m.dtypes) == {torch.float32}, amp


def test_fp16_refused_for_manual_backward_methods():
    class Manual(DropMethod):
        manual_backward = True

    with pytest.raises(ValueError, match="fp16.*manual_backward"):
        Trainer(Manual(), device="cpu", amp="fp16")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fp16_uses_a_grad_scaler_and_checkpoints_it(tmp_path):
    m, tr = _trainer(device="cuda", amp="fp16", run_dir=tmp_path / "run")
    tr.fit(StepBatches(NoisyData(), 6, seed=3), steps=4)
    assert tr.scaler is not None and set(m.dtypes) == {torch.float16} and tr.pin_memory
    state = Trainer.read_checkpoint(tr.checkpoints()[-1])
    assert state["scaler"] is not None and "scale" in state["scaler"]


# ---- run folders ----------------------------------------------------------------------------------------
class Crash(DropMethod):
    """Raises in the step ``crash_at`` (a simulated kill)."""

    crash_at: int | None = None

    def training_step(self, batch):
        if self.crash_at is not None and len(self.dtypes) == self.crash_at:
            raise KeyboardInterrupt("killed")
        return super().training_step(batch)


def _fit_run(run_dir, crash_at=None, resume=False, batch_size=6, seed_init=5):
    torch.manual_seed(seed_init)
    m = Crash()
    m.crash_at = crash_at
    hist = fit(m, NoisyData(), batch_size=batch_size, steps=9, lr=0.05, seed=1, device="cpu", progress=False,
               run_dir=run_dir, ckpt_every=3 if run_dir else 0, resume=resume)
    return m, hist


def test_run_folder_files_and_exact_resume_after_a_kill(tmp_path):
    ref_m, ref_hist = _fit_run(None)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _fit_run(run, crash_at=5)
    info = read_run(run)
    assert info["status"] == "failed at step 5: KeyboardInterrupt" and info["step"] == 5
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == ["ckpt_00000003.pt"]
    with pytest.raises(ValueError, match="already holds checkpoints.*resume=True"):
        _fit_run(run)  # never restarted silently
    with pytest.raises(ValueError, match="batched differently.*batch_size"):
        _fit_run(run, resume=True, batch_size=5)
    m, hist = _fit_run(run, resume=True, seed_init=77)
    assert hist == ref_hist
    _same(ref_m, m)
    info = read_run(run)
    assert info["status"] == "finished" and info["step"] == 9 and info["history"] == ref_hist
    assert info["resumed_from"] == "checkpoints/ckpt_00000003.pt"
    assert info["data"]["batch_size"] == 6 and info["data"]["dataset_size"] == 30
    assert info["engine"]["world_size"] == 1 and info["engine"]["amp"] is None
    assert info["settings"]["seed"] == 1 and info["settings"]["total_steps"] == 9
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == ["ckpt_00000006.pt", "ckpt_00000009.pt"]
    assert len((run / HISTORY_FILE).read_text().splitlines()) == 9
    assert json.loads((run / RUN_FILE).read_text())["history"] == HISTORY_FILE
    assert not [p for p in run.rglob("*.tmp*")]
    # a finished run: resume=True loads the final checkpoint and trains nothing ("load if present, else train")
    m3, hist3 = _fit_run(run, resume=True, seed_init=123)
    assert hist3 == ref_hist and read_run(run)["resumed_from"] == "checkpoints/ckpt_00000009.pt"
    assert m3.dtypes == []
    _same(ref_m, m3)


def test_run_dir_arguments(tmp_path):
    with pytest.raises(ValueError, match="run_dir .* or ckpt_dir, not both"):
        _trainer(run_dir=tmp_path / "a", ckpt_dir=tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        read_run(tmp_path)
    _, tr = _trainer(run_dir=tmp_path / "r")
    assert tr.ckpt_dir == tmp_path / "r" / "checkpoints"
    with pytest.raises(ValueError, match="resume=True needs ckpt_dir or run_dir"):
        _trainer()[1].fit(StepBatches(NoisyData(), 6), resume=True)


def test_steps_and_eta_are_logged_before_and_during_training(caplog):
    _, tr = _trainer(total_steps=12)
    with caplog.at_level(logging.INFO, logger="medvlp_lib.train"):
        tr.fit(StepBatches(NoisyData(), 6, seed=3), steps=12)
    msgs = [r.getMessage() for r in caplog.records if r.name == "medvlp_lib.train"]
    assert len(msgs) == 2, msgs
    assert msgs[0].startswith("DropMethod: 12 steps to run (step 0 -> 12 of 12) on cpu")
    assert "s/step; about 0:00:" in msgs[1] and "remaining 6 steps" in msgs[1]
    assert tr.seconds_per_step is not None and tr.seconds_per_step > 0
