"""Trainer: schedule, deterministic batches, exact resume, manual backward / hooks, bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from medvlp_lib.train import StepBatches, Trainer, param_groups, step_seed, warmup_cosine




class ToyData(torch.utils.data.Dataset):
    def __init__(self, n=40):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 6, generator=g)
        self.y = (self.x[:, :1] > 0).float()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i], "text": f"item {i}", "index": i}


class ToyMethod(nn.Module):
    """Tiny model with random augmentation (global RNG), dropout, an EMA buffer updated by the hook."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Dropout(0.2), nn.Linear(8, 1))
        self.logit_scale = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("ema", torch.zeros(1))
        self.hook_calls = 0

    def training_step(self, batch):
        x = batch["x"] + 0.1 * torch.randn_like(batch["x"])  # augmentation from the reseeded global RNG
        logits = self.net(x) * self.logit_scale
        loss = nn.functional.binary_cross_entropy_with_logits(logits, batch["y"])
        return {"loss": loss, "noise_probe": float(torch.rand(()))}

    def after_optimizer_step(self):
        self.hook_calls += 1
        with torch.no_grad():
            self.ema.mul_(0.9).add_(0.1 * self.net[0].weight.mean())


def make(seed=0, **kw):
    torch.manual_seed(123)  # identical initial weights
    method = ToyMethod()
    args = dict(lr=0.05, weight_decay=0.1, warmup_steps=3, total_steps=16, device="cpu", seed=seed,
                progress=False, grad_clip=1.0)
    args.update(kw)
    return method, Trainer(method, **args)


def test_warmup_cosine_values():
    assert warmup_cosine(0, 4, 20) == pytest.approx(0.25)
    assert warmup_cosine(3, 4, 20) == pytest.approx(1.0)
    assert warmup_cosine(4, 4, 20) == pytest.approx(1.0)
    assert warmup_cosine(12, 4, 20) == pytest.approx(0.5)
    assert warmup_cosine(20, 4, 20) == pytest.approx(0.0)
    assert warmup_cosine(50, 4, 20, min_ratio=0.1) == pytest.approx(0.1)
    assert warmup_cosine(0, 0, 10) == pytest.approx(1.0)
    vals = [warmup_cosine(s, 0, 10) for s in range(11)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))
    with pytest.raises(ValueError, match="total"):
        warmup_cosine(0, 0, 0)


def test_step_batches_deterministic_epochs():
    data = ToyData(10)
    sb = StepBatches(data, 3, seed=5)
    assert len(sb) == 3  # drop_last: 10 // 3
    epoch0 = np.concatenate([sb.indices(s) for s in range(3)])
    assert len(set(epoch0.tolist())) == 9
    epoch1 = np.concatenate([sb.indices(s) for s in range(3, 6)])
    assert not np.array_equal(epoch0, epoch1)
    again = StepBatches(data, 3, seed=5)
    np.testing.assert_array_equal(again.indices(4), sb.indices(4))
    assert not np.array_equal(StepBatches(data, 3, seed=6).indices(0), sb.indices(0))
    b = sb.batch(1)
    assert b["x"].shape == (3, 6) and isinstance(b["text"], list) and len(b["text"]) == 3
    keep = StepBatches(data, 3, seed=5, drop_last=False)
    assert len(keep) == 4 and len(keep.indices(3)) == 1
    with pytest.raises(ValueError, match="batch_size"):
        StepBatches(data, 11)
    with pytest.raises(ValueError, match="step"):
        sb.indices(-1)


def test_param_groups_no_decay_on_bias_norm_scale():
    method = ToyMethod()
    groups = param_groups(method, 0.3)
    decay = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.3 and groups[1]["weight_decay"] == 0.0
    assert id(method.net[0].weight) in decay and id(method.net[3].weight) in decay
    for p in (method.net[0].bias, method.net[1].weight, method.logit_scale):
        assert id(p) not in decay


def test_history_and_schedule():
    method, tr = make()
    hist = tr.fit(StepBatches(ToyData(), 8, seed=0), steps=16)
    assert [h["step"] for h in hist] == list(range(16))
    assert all(math.isfinite(h["loss"]) and "noise_probe" in h and "grad_norm" in h for h in hist)
    for h in hist:
        assert h["lr"] == pytest.approx(0.05 * warmup_cosine(h["step"], 3, 16))
    assert method.hook_calls == 16 and float(method.ema) != 0.0
    assert tr.fit(StepBatches(ToyData(), 8, seed=0), steps=16) is hist and len(hist) == 16  # nothing left


def test_exact_resume_bit_identical(tmp_path):
    data = ToyData()
    ref_method, ref = make()
    ref_hist = ref.fit(StepBatches(data, 8, seed=0), steps=16)

    m1, t1 = make(ckpt_dir=tmp_path, ckpt_every=4)
    t1.fit(StepBatches(data, 8, seed=0), steps=8)  # "interrupted" after 8 steps
    assert [p.name for p in t1.checkpoints()] == ["ckpt_00000004.pt", "ckpt_00000008.pt"]
    torch.manual_seed(999)  # disturb the global RNG and build a fresh method with other weights
    m2 = ToyMethod()
    t2 = Trainer(m2, lr=0.05, weight_decay=0.1, warmup_steps=3, total_steps=16, device="cpu", seed=0,
                 progress=False, grad_clip=1.0, ckpt_dir=tmp_path, ckpt_every=4)
    hist = t2.fit(StepBatches(data, 8, seed=0), steps=16, resume=True)
    assert len(hist) == 16
    assert [h["loss"] for h in hist] == [h["loss"] for h in ref_hist]
    assert [h["noise_probe"] for h in hist] == [h["noise_probe"] for h in ref_hist]
    for (name, a), b in zip(ref_method.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), name
    # a different seed gives a different trajectory (the test can fail)
    _, other = make(seed=1)
    assert other.fit(StepBatches(data, 8, seed=0), steps=4)[-1]["loss"] != ref_hist[3]["loss"]


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    method, tr = make(ckpt_dir=tmp_path / "new")
    hist = tr.fit(StepBatches(ToyData(), 8, seed=0), steps=4, resume=True)
    assert len(hist) == 4 and (tmp_path / "new" / "ckpt_00000004.pt").exists()


class ManualMethod(ToyMethod):
    manual_backward = True

    def training_step(self, batch):
        total = 0.0
        for chunk in (slice(0, 4), slice(4, 8)):  # gradient accumulation over two micro-batches
            out = super().training_step({k: v[chunk] for k, v in batch.items() if torch.is_tensor(v)})
            (out["loss"] / 2).backward()
            total += float(out["loss"].detach()) / 2
        return {"loss": total, "micro_batches": 2}


def test_manual_backward_method():
    torch.manual_seed(0)
    method = ManualMethod()
    before = method.net[0].weight.detach().clone()
    tr = Trainer(method, lr=0.05, total_steps=3, device="cpu", progress=False)
    hist = tr.fit(StepBatches(ToyData(), 8, seed=0))
    assert len(hist) == 3 and hist[0]["micro_batches"] == 2.0 and method.hook_calls == 3
    assert not torch.equal(before, method.net[0].weight)


def test_bad_input(tmp_path):
    method = ToyMethod()
    with pytest.raises(ValueError, match="ckpt_dir"):
        Trainer(method, ckpt_every=5, device="cpu")
    tr = Trainer(method, total_steps=4, device="cpu", progress=False)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="steps"):
            tr.fit(StepBatches(ToyData(), 8), steps=bad)
    with pytest.raises(ValueError, match="exceeds total_steps"):
        tr.fit(StepBatches(ToyData(), 8), steps=5)
    with pytest.raises(TypeError, match="batch"):
        tr.fit([1, 2, 3], steps=2)
    with pytest.raises(TypeError, match="training_step"):
        Trainer(nn.Linear(2, 2), device="cpu")
    with pytest.raises(ValueError, match="resume=True needs ckpt_dir"):
        Trainer(ToyMethod(), total_steps=2, device="cpu", progress=False).fit(StepBatches(ToyData(), 8), resume=True)


def test_corrupt_and_mismatched_checkpoints(tmp_path):
    good = tmp_path / "good"
    _, tr = make(ckpt_dir=good)
    tr.fit(StepBatches(ToyData(), 8, seed=0), steps=2)
    # corrupt: truncated file
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "ckpt_00000002.pt").write_bytes((good / "ckpt_00000002.pt").read_bytes()[:100])
    _, tr2 = make(ckpt_dir=bad)
    with pytest.raises(ValueError, match="corrupt"):
        tr2.fit(StepBatches(ToyData(), 8, seed=0), steps=4, resume=True)
    # mismatched settings (another seed)
    _, tr3 = make(seed=7, ckpt_dir=good)
    with pytest.raises(ValueError, match="settings differ"):
        tr3.fit(StepBatches(ToyData(), 8, seed=0), steps=4, resume=True)

    # mismatched architecture
    class Wider(ToyMethod):
        def __init__(self):
            super().__init__()
            self.net[0] = nn.Linear(6, 8, bias=False)

    wider = Wider()
    wider.__class__.__name__ = "ToyMethod"
    tr4 = Trainer(wider, lr=0.05, weight_decay=0.1, warmup_steps=3, total_steps=16, device="cpu", seed=0,
                  progress=False, grad_clip=1.0, ckpt_dir=good)
    with pytest.raises(ValueError, match="does not match"):
        tr4.fit(StepBatches(ToyData(), 8, seed=0), steps=4, resume=True)


def test_non_finite_loss_raises():
    class Nan(ToyMethod):
        def training_step(self, batch):
            return {"loss": self.net(batch["x"]).sum() * float("nan")}

    tr = Trainer(Nan(), total_steps=2, device="cpu", progress=False)
    with pytest.raises(FloatingPointError, match="step 0"):
        tr.fit(StepBatches(ToyData(), 8))


def test_step_seed_distinct():
    seeds = {step_seed(0, s) for s in range(100)} | {step_seed(1, s) for s in range(100)}
    assert len(seeds) == 200


class _BagText(nn.Module):
    out_dim = 8

    def __init__(self):
        super().__init__()
        self.emb = nn.EmbeddingBag(128, 8)

    def forward(self, texts):
        ids = [torch.tensor([ord(c) % 128 for c in t] or [0]) for t in texts]
        offsets = torch.tensor([0] + [len(i) for i in ids[:-1]]).cumsum(0)
        return self.emb(torch.cat(ids), offsets)


class _Images(torch.utils.data.Dataset):
    def __len__(self):
        return 12

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {"image": torch.rand(1, 32, 32, generator=g), "text": f"report {i % 5} " * (1 + i % 3)}


def _clip_run(tmp=None, steps=6, resume=False):
    from medvlp_lib.methods.clip import CLIP
    from medvlp_lib.models.encoders import DualEncoder, build_image_encoder

    torch.manual_seed(0)
    model = DualEncoder(build_image_encoder("test_resnet"), _BagText(), embed_dim=8, proj="mlp")
    method = CLIP(model, augment=lambda x: (x + 0.05 * torch.randn_like(x)).flip(-1) if torch.rand(()) < 0.5 else x)
    tr = Trainer(method, lr=1e-2, warmup_steps=2, total_steps=6, device="cpu", seed=3, progress=False,
                 ckpt_dir=tmp, ckpt_every=3 if tmp else 0)
    hist = tr.fit(StepBatches(_Images(), 4, seed=3), steps=steps, resume=resume)
    return method, hist


def test_clip_exact_resume_with_batchnorm_and_augmentation(tmp_path):
    ref, ref_hist = _clip_run()
    _clip_run(tmp_path, steps=3)
    resumed, hist = _clip_run(tmp_path, steps=6, resume=True)
    assert [h["loss"] for h in hist] == [h["loss"] for h in ref_hist]
    for (name, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name  # includes batch-norm running statistics
