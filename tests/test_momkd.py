"""Tests for the MoMKD method: loss assembly, gradient decoupling, momentum memory, WSI-only inference."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medvlp_lib.data.pathology import SlideBatches, simulate_cohort
from medvlp_lib.methods.momkd import VARIANTS, MoMKD

D, G = 16, 24


@pytest.fixture(scope="module")
def cohort():
    return simulate_cohort(8, seed=0, n_patches=(20, 40), feature_dim=D, n_genes=G, n_modules=3)


def _model(mode="momentum", **kw):
    torch.manual_seed(0)
    return MoMKD(D, G, hidden_dim=16, shared_dim=8, omics_hidden=16, n_slots=3, memory_mode=mode, dropout=0.0, **kw)


def _grads(loss, params):
    gs = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return sum(0.0 if g is None else float(g.abs().sum()) for g in gs)


def _pos(cohort):
    return cohort[int(np.flatnonzero(cohort.labels == 1)[0])].to_batch()


@pytest.mark.parametrize("mode", ["momentum", "learned", "fixed"])
def test_gradient_decoupling(cohort, mode):
    m = _model(mode)
    m.init_memory(cohort)
    parts = m.losses(_pos(cohort))
    slide = [p for n, p in m.named_parameters() if n.startswith(("slide_encoder", "patch_proj", "pool_proj"))]
    omics = [p for n, p in m.named_parameters() if n.startswith(("omics_encoder", "omics_decoder", "omics_proj"))]
    assert slide and omics
    w = m.weights
    omics_loss = w["mse"] * parts["mse"] + w["align_omics"] * parts["align_omics"]
    wsi_loss = w["ce"] * parts["ce"] + w["align_wsi"] * parts["align_wsi"] + w["mem"] * parts["mem"]
    assert _grads(omics_loss, slide) == 0.0  # omics losses never reach the slide encoder
    assert _grads(wsi_loss, omics) == 0.0  # and WSI losses never reach the omics encoder
    assert _grads(omics_loss, omics) > 0 and _grads(wsi_loss, slide) > 0
    assert _grads(parts["align_wsi"], slide) > 0 and _grads(parts["ce"], slide) > 0
    if mode == "learned":
        slots = [m.memory.slots]
        assert _grads(parts["ce"], slots) == 0.0  # classification never reaches the memory
        assert _grads(parts["align_omics"], slots) > 0  # omics etches the memory (public-code behaviour)
    else:
        assert not m.memory.slots.requires_grad  # buffers: no gradient at all
        assert all(n != "memory.slots" for n, _ in m.named_parameters())


def test_total_loss_weights(cohort):
    m = _model()
    parts = m.losses(_pos(cohort))
    expected = (0.5 * parts["ce"] + 0.01 * parts["mse"] + 0.2 * parts["align_wsi"] + 0.05 * parts["align_omics"]
                + 0.1 * parts["mem"])
    torch.testing.assert_close(parts["loss"], expected)
    code = _model(recon_weight=0.05)
    assert code.weights["mse"] == 0.05
    out = m.training_step(_pos(cohort))
    assert set(out) >= {"loss", "ce", "mse", "align_wsi", "align_omics", "mem", "tau"}
    assert isinstance(out["ce"], float) and out["loss"].requires_grad


def test_momentum_update_after_step(cohort):
    m = _model("momentum", momentum=0.5)
    m.init_memory(cohort)
    before = m.memory.slots.clone()
    b = _pos(cohort)
    out = m.training_step(b)
    out["loss"].backward()
    torch.testing.assert_close(m.memory.slots, before)  # nothing moves before the optimiser step
    m.after_optimizer_step()
    changed = (m.memory.slots - before).abs().sum(-1) > 0
    assert changed[1].any() and not changed[0].any()  # only the positive memory moved
    torch.testing.assert_close(m.memory.slots.norm(dim=-1), torch.ones(2, 3))
    assert m.memory.usage[1].sum() == 2  # omics projection + slide projection
    m.after_optimizer_step()  # pending features are consumed once
    assert m.memory.usage[1].sum() == 2
    for mode in ("fixed", "learned"):
        f = _model(mode)
        f.init_memory(cohort)
        snap = f.memory.slots.detach().clone()
        f.training_step(b)
        f.after_optimizer_step()
        torch.testing.assert_close(f.memory.slots.detach(), snap)


def test_memory_sources_option(cohort):
    m = _model(memory_sources=("patches",))
    m.init_memory(cohort)
    b = _pos(cohort)
    m.training_step(b)
    m.after_optimizer_step()
    assert m.memory.usage[1].sum() == b["features"].shape[0]
    with pytest.raises(ValueError, match="memory_sources"):
        _model(memory_sources=("rna",))


def test_init_memory_kmeans(cohort):
    m = _model()
    r = m.init_memory(cohort, max_patches_per_slide=20)
    assert bool(m.memory.initialized) and sum(r["n_features"]) == 20 * len(cohort)
    m2 = _model()
    m2.init_memory(cohort, max_patches_per_slide=20)
    torch.testing.assert_close(m.memory.slots, m2.memory.slots)  # deterministic
    with pytest.warns(UserWarning, match="not K-means initialised"):
        _model().training_step(_pos(cohort))


def test_predict_uses_wsi_only(cohort):
    m = _model()
    b = _pos(cohort)
    slide_only = {"features": b["features"], "coords": b["coords"]}
    p = m.predict(slide_only)
    assert 0.0 <= p["prob"] <= 1.0 and p["attention"].shape == (b["features"].shape[0],)
    torch.testing.assert_close(p["attention"].sum(), torch.tensor(1.0))
    p2 = m.predict(cohort[int(np.flatnonzero(cohort.labels == 1)[0])])  # a Slide works too
    assert abs(p2["prob"] - p["prob"]) < 1e-6
    assert m.training  # predict restores the mode
    with pytest.raises(ValueError, match="'edge_index' .* or 'coords'"):
        m.predict({"features": b["features"]})
    with pytest.raises(ValueError, match=r"features must be a non-empty \[N, 16\]"):
        m.predict({"features": torch.zeros(3, 5), "coords": torch.zeros(3, 2)})
    with pytest.raises(ValueError, match="needs batch\\['omics'\\]"):
        m.training_step({**slide_only, "label": torch.tensor(1)})


@pytest.mark.filterwarnings("ignore:MoMKD memory is not K-means")
def test_variants(cohort):
    assert {"full", "wsi_baseline", "wsi_align_only", "omics_align_only", "no_recon", "hard_max",
            "fixed_memory", "learned_memory"} <= set(VARIANTS)
    base = MoMKD.variant("wsi_baseline", D, 0, hidden_dim=16, shared_dim=8, n_slots=2)
    assert not hasattr(base, "omics_encoder") and base.memory.mode == "fixed"
    b = _pos(cohort)
    out = base.training_step({k: v for k, v in b.items() if k != "omics"})
    assert out["align_wsi"] == 0.0 and out["align_omics"] == 0.0 and out["mse"] == 0.0
    wo = MoMKD.variant("wsi_align_only", D, G, hidden_dim=16, shared_dim=8, n_slots=2)
    assert wo.memory_sources == ("wsi",) and not wo.use_omics
    oo = MoMKD.variant("omics_align_only", D, G, hidden_dim=16, shared_dim=8, n_slots=2)
    assert oo.memory_sources == ("omics",) and oo.training_step(b)["align_wsi"] == 0.0
    hm = MoMKD.variant("hard_max", D, G, hidden_dim=16, shared_dim=8, n_slots=2)
    assert hm.hard_max
    pm = MoMKD.variant("patch_memory", D, G, hidden_dim=16, shared_dim=8, n_slots=2)
    pm.init_memory(cohort)
    before = pm.memory.slots.clone()
    n = b["features"].shape[0]
    pm.training_step(b)
    assert pm._pending[0][0].shape[0] == n + 2  # patches + slide + omics projections move the memory
    pm.after_optimizer_step()
    assert not torch.equal(before, pm.memory.slots)
    with pytest.raises(ValueError, match="unknown MoMKD variant"):
        MoMKD.variant("nope", D, G)


def test_state_dict_and_short_training(cohort):
    m = _model()
    m.init_memory(cohort)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    sb = SlideBatches(cohort, seed=0)
    first = None
    for step in range(20):
        torch.manual_seed(step)
        out = m.training_step(sb.batch(step))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        m.after_optimizer_step()
        first = first if first is not None else float(out["loss"].detach())
    losses = [float(m.losses(sb.batch(s))["loss"]) for s in range(8)]
    assert np.mean(losses) < first
    m2 = _model()
    m2.load_state_dict(m.state_dict())
    b = cohort[0].to_batch()
    assert abs(m2.predict(b)["prob"] - m.predict(b)["prob"]) < 1e-6
    torch.testing.assert_close(m2.memory.slots, m.memory.slots)
    torch.testing.assert_close(m2.memory.usage, m.memory.usage)


def test_predict_chunked_matches_full(cohort):
    m = _model()
    b = cohort[0].to_batch()
    full, chunked = m.predict(b, chunk_size=None), m.predict(b, chunk_size=7)
    torch.testing.assert_close(chunked["attention"], full["attention"], atol=1e-5, rtol=1e-4)
    assert abs(chunked["prob"] - full["prob"]) < 1e-5


@pytest.mark.parametrize("mode", ["momentum", "learned"])
def test_interrupted_training_resumes_exactly(cohort, tmp_path, mode):
    """Stop after 4 of 8 steps, rebuild everything, resume from the checkpoint: the losses, the weights and
    the memory slots equal an uninterrupted run's (dropout on, so the trainer's RNG state matters too)."""
    from medvlp_lib.train import Trainer

    def make(ckpt_dir=None):
        torch.manual_seed(0)
        m = MoMKD(D, G, hidden_dim=16, shared_dim=8, omics_hidden=16, n_slots=3, memory_mode=mode, dropout=0.25)
        m.init_memory(cohort, seed=0)
        return m, Trainer(m, lr=1e-2, warmup_steps=2, total_steps=8, device="cpu", seed=0, progress=False,
                          ckpt_dir=ckpt_dir, ckpt_every=4 if ckpt_dir else 0)

    ref, tr = make()
    ref_hist = tr.fit(SlideBatches(cohort, seed=0), steps=8)
    m1, t1 = make(tmp_path)
    t1.fit(SlideBatches(cohort, seed=0), steps=4)
    torch.manual_seed(123)  # a disturbed global RNG must not matter
    m2, t2 = make(tmp_path)
    hist = t2.fit(SlideBatches(cohort, seed=0), steps=8, resume=True)
    assert [h["loss"] for h in hist] == [h["loss"] for h in ref_hist]
    for (name, a), b in zip(ref.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), name
    assert not torch.equal(ref.memory.normalized(), m1.memory.normalized())  # the memory did move after step 4
