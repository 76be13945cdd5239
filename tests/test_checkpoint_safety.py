"""No load runs code; resume survives damaged checkpoints and killed writes.

A crafted pickle (a class whose ``__reduce__`` would create a marker file) is planted where the library reads
torch files: the trainer's newest checkpoint, the SSL backbone cache, a CLAM ``.pt`` feature file and the VLCD
teacher cache. The marker must never appear, and the error or warning must name the file.
"""
from __future__ import annotations

import os
import pickle
import warnings

import pytest
import torch
from torch import nn

from medvlp_lib.train import CHECKPOINT_KEYS, CheckpointError, StepBatches, Trainer
from medvlp_lib.utils import UnsafeFileError, safe_torch_load


class _Evil:
    """Unpickling this calls ``os.system('touch <marker>')``, i.e. runs a command."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(path, marker, wrap=True):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"version": 1, "payload": _Evil(marker)} if wrap else _Evil(marker), path)
    assert path.exists() and not marker.exists()


class _Data(torch.utils.data.Dataset):
    def __init__(self, n=24):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = (self.x[:, :1] > 0).float()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class _Method(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.2), nn.Linear(6, 1))

    def training_step(self, batch):
        x = batch["x"] + 0.1 * torch.randn_like(batch["x"])
        return {"loss": nn.functional.binary_cross_entropy_with_logits(self.net(x), batch["y"])}


def _trainer(ckpt_dir, **kw):
    torch.manual_seed(7)
    method = _Method()
    args = dict(lr=0.05, weight_decay=0.1, warmup_steps=2, total_steps=12, device="cpu", seed=0, progress=False,
                ckpt_dir=ckpt_dir, ckpt_every=3, keep_last=3)
    args.update(kw)
    return method, Trainer(method, **args)


def _batches():
    return StepBatches(_Data(), 6, seed=0)


def test_safe_torch_load_refuses_code_and_names_the_file(tmp_path):
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pt"
    _plant(path, marker)
    with pytest.raises(UnsafeFileError, match=r"cache .*evil\.pt holds pickled Python objects"):
        safe_torch_load(path, "cache")
    assert not marker.exists()
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match=r"cut\.pt is corrupt or not a torch file"):
        safe_torch_load(tmp_path / "cut.pt")
    with pytest.raises(FileNotFoundError, match=r"nope\.pt does not exist"):
        safe_torch_load(tmp_path / "nope.pt")
    torch.save({"w": torch.ones(2)}, tmp_path / "ok.pt")
    assert torch.equal(safe_torch_load(tmp_path / "ok.pt")["w"], torch.ones(2))


# ------------------------------------------------------------------------------------------- (a) trainer
def test_malicious_newest_checkpoint_never_runs_and_resume_falls_back(tmp_path):
    marker = tmp_path / "MARKER"
    ref_method, ref = _trainer(None, ckpt_every=0)
    ref_hist = ref.fit(_batches(), steps=12)

    _, t1 = _trainer(tmp_path / "ck")
    t1.fit(_batches(), steps=6)                          # ckpt_3, ckpt_6
    evil = tmp_path / "ck" / "ckpt_00000009.pt"          # a newer, crafted checkpoint
    _plant(evil, marker)
    method, t2 = _trainer(tmp_path / "ck")
    with pytest.warns(RuntimeWarning) as rec:
        hist = t2.fit(_batches(), steps=12, resume=True)
    assert not marker.exists()
    msg = " ".join(str(w.message) for w in rec)
    assert "ckpt_00000009.pt" in msg and "ckpt_00000006.pt" in msg and "newest good" in msg
    assert "holds pickled Python objects" in msg
    # nothing lost: resumed at step 6 and followed the uninterrupted trajectory exactly
    assert [h["loss"] for h in hist] == [h["loss"] for h in ref_hist]
    for a, b in zip(ref_method.state_dict().values(), method.state_dict().values()):
        assert torch.equal(a, b)
    # the damaged file is set aside, no longer a checkpoint
    assert (tmp_path / "ck" / "ckpt_00000009.pt.corrupt").exists()
    assert [p.name for p in t2.checkpoints()][-1] == "ckpt_00000012.pt"


def test_only_a_malicious_checkpoint_raises_naming_it(tmp_path):
    marker = tmp_path / "MARKER"
    _plant(tmp_path / "ck" / "ckpt_00000003.pt", marker, wrap=False)
    _, tr = _trainer(tmp_path / "ck")
    with pytest.raises(CheckpointError, match=r"ckpt_00000003\.pt holds pickled Python objects"):
        tr.fit(_batches(), steps=6, resume=True)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=r"ckpt_00000003\.pt"):
        Trainer.read_checkpoint(tmp_path / "ck" / "ckpt_00000003.pt")
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------- resume
def test_truncated_newest_checkpoint_falls_back_to_the_newest_good_one(tmp_path):
    _, ref = _trainer(None, ckpt_every=0)
    ref_hist = ref.fit(_batches(), steps=12)
    _, t1 = _trainer(tmp_path)
    t1.fit(_batches(), steps=9)                           # ckpt_3, ckpt_6, ckpt_9
    newest = tmp_path / "ckpt_00000009.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])   # a write cut short (disk full)
    _, t2 = _trainer(tmp_path)
    with pytest.warns(RuntimeWarning, match=r"ckpt_00000009\.pt.*corrupt.*resumed from .*ckpt_00000006\.pt"):
        hist = t2.fit(_batches(), steps=12, resume=True)
    assert [h["loss"] for h in hist] == [h["loss"] for h in ref_hist]


def test_every_checkpoint_damaged_raises_listing_them(tmp_path):
    tmp_path.joinpath("ckpt_00000003.pt").write_bytes(b"")
    tmp_path.joinpath("ckpt_00000006.pt").write_bytes(b"garbage")
    _, tr = _trainer(tmp_path)
    with pytest.raises(CheckpointError, match=r"every one is damaged.*ckpt_00000006\.pt.*ckpt_00000003\.pt"):
        tr.fit(_batches(), steps=6, resume=True)


@pytest.mark.parametrize("key", [k for k in CHECKPOINT_KEYS if k != "version"])
def test_checkpoint_missing_a_key_names_file_and_key(tmp_path, key):
    _, t1 = _trainer(tmp_path)
    t1.fit(_batches(), steps=3)
    path = tmp_path / "ckpt_00000003.pt"
    state = torch.load(path, weights_only=True)
    del state[key]
    torch.save(state, path)
    _, t2 = _trainer(tmp_path)
    with pytest.raises(CheckpointError, match=rf"ckpt_00000003\.pt is incomplete: missing key\(s\) \['{key}'\]"):
        t2.fit(_batches(), steps=6, resume=True)


def test_checkpoint_with_wrong_types_names_the_key(tmp_path):
    _, t1 = _trainer(tmp_path)
    t1.fit(_batches(), steps=3)
    path = tmp_path / "ckpt_00000003.pt"
    state = torch.load(path, weights_only=True)
    state["settings"] = "lr=0.05"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"key 'settings' holds str"):
        Trainer.read_checkpoint(path)


def test_stale_temp_files_of_killed_writes_are_removed_on_the_next_save(tmp_path):
    stale = [tmp_path / "ckpt_00000003.pt.tmp4242", tmp_path / "ckpt_00000099.pt.tmp1"]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    keep = tmp_path / "notes.txt"
    keep.write_text("not ours")
    _, tr = _trainer(tmp_path)
    tr.fit(_batches(), steps=3)
    assert not any(p.exists() for p in stale) and keep.exists()
    assert [p.name for p in tr.checkpoints()] == ["ckpt_00000003.pt"]
    assert not list(tmp_path.glob("*.tmp*"))


def test_resume_of_another_run_is_not_treated_as_damage(tmp_path):
    _, t1 = _trainer(tmp_path)
    t1.fit(_batches(), steps=6)
    _, t2 = _trainer(tmp_path, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no fallback warning: a different run is an error, not damage
        with pytest.raises(ValueError, match=r"ckpt_00000006\.pt was written by a different run"):
            t2.fit(_batches(), steps=12, resume=True)
    assert (tmp_path / "ckpt_00000006.pt").exists()


# ------------------------------------------------------------------------------------------- (b) SSL cache
def test_malicious_ssl_backbone_cache_never_runs(tmp_path):
    from medvlp_lib.methods.ssl import SSLConfig, offline_pretrained_backbone, ssl_cache_path

    cfg = SSLConfig(arch="resnet18", size=64, n_radiographs=24, n_natural=8, steps=3, batch_size=8)
    marker = tmp_path / "MARKER"
    path = ssl_cache_path(cfg, tmp_path)
    _plant(path, marker)
    with pytest.raises(RuntimeError, match=rf"{path.name}.*holds pickled Python objects"):
        offline_pretrained_backbone(cfg, cache_dir=tmp_path, on_invalid="raise", progress=False)
    assert not marker.exists()
    with pytest.warns(UserWarning, match=rf"{path.name}.*holds pickled Python objects.*retraining"):
        enc = offline_pretrained_backbone(cfg, cache_dir=tmp_path, progress=False)
    assert not marker.exists() and not enc.ssl_info["loaded"]
    assert safe_torch_load(path)["code_version"]  # replaced by a clean file


# ------------------------------------------------------------------------------------ (c) other loaded files
def test_malicious_clam_pt_feature_file_never_runs(tmp_path):
    from medvlp_lib.data.real.clam_features import load_slide_features, read_clam

    marker = tmp_path / "MARKER"
    _plant(tmp_path / "pt_files" / "s1.pt", marker, wrap=False)
    (tmp_path / "labels.csv").write_text("case_id,slide_id,label\nc1,s1,1\n")
    with pytest.raises(ValueError, match=r"pt_files/s1\.pt holds pickled Python objects"):
        read_clam(tmp_path)
    with pytest.raises(ValueError, match=r"pt_files/s1\.pt holds pickled Python objects"):
        load_slide_features(tmp_path, "s1")
    c = read_clam(tmp_path, validate="none")
    with pytest.raises(ValueError, match=r"s1\.pt"):
        c[0]
    assert not marker.exists()


def test_malicious_vlcd_teacher_cache_never_runs(tmp_path, monkeypatch):
    """The VLCD teacher cache (``experiments/vlcd.py``) is read with ``weights_only=True``: nothing runs."""
    monkeypatch.setenv("MEDVLP_CACHE", str(tmp_path))
    from medvlp_lib.experiments import get
    from medvlp_lib.experiments import vlcd as X

    cfg = get("vlcd_students").config("fast", dict(n_train=48, n_test=40, teacher_steps=1, teacher_batch=16))
    marker = tmp_path / "MARKER"
    _plant(X.teacher_path(cfg), marker, wrap=False)
    X._TEACHERS.clear()
    with pytest.raises((pickle.UnpicklingError, ValueError)):
        X.get_teacher(cfg, progress=False)
    assert not marker.exists()
    X._TEACHERS.clear()


def test_no_torch_load_without_weights_only_in_the_library():
    import medvlp_lib

    root = os.path.dirname(medvlp_lib.__file__)
    calls, unsafe = [], []
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                text = open(os.path.join(dirpath, f)).read()
                for i, line in enumerate(text.splitlines(), 1):
                    if "torch.load(" in line and not line.lstrip().startswith(("#", "``", "read with")):
                        calls.append(f"{f}:{i}")
                        if "weights_only=True" not in line:
                            unsafe.append(f"{f}:{i}")
    assert calls  # the scan sees the library's loads (utils.safe_torch_load, experiments/vlcd.py)
    assert not unsafe, unsafe


@pytest.mark.parametrize("name", ["densenet121-res224-all", "resnet50-res512-all"])
def test_torchxrayvision_weights_are_read_without_running_code(tmp_path, name):
    """torchxrayvision reads its DenseNet / ResNet weights with weights_only=False; the library reads them itself
    (weights_only=True; for the DenseNet's pickled model only its own layer classes are allowed)."""
    import torchxrayvision as xrv

    from medvlp_lib.models.backbones import XRV_BACKBONES, build_frozen_image_backbone

    weights = XRV_BACKBONES[name][1]
    path = tmp_path / os.path.basename(xrv.models.model_urls[weights]["weights_url"])
    marker = tmp_path / "ran"
    _plant(path, marker, wrap=False)
    with pytest.raises((UnsafeFileError, ValueError), match=str(path.name)):
        build_frozen_image_backbone(name, cache_dir=tmp_path, resize=False)
    assert not marker.exists()


def test_torchxrayvision_resnet_state_dict_loads(tmp_path):
    import torchvision
    import torchxrayvision as xrv

    from medvlp_lib.models.backbones import build_frozen_image_backbone

    weights = "resnet50-res512-all"
    torch.manual_seed(0)
    ref = torchvision.models.resnet50(num_classes=len(xrv.models.model_urls[weights]["labels"]), weights=None)
    ref.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    torch.save(ref.state_dict(), tmp_path / os.path.basename(xrv.models.model_urls[weights]["weights_url"]))
    bb = build_frozen_image_backbone(weights, cache_dir=tmp_path, resize=False)
    assert bb.out_dim == 2048
    x = torch.rand(1, 1, 64, 64)
    torch.testing.assert_close(bb.model.model.conv1.weight, ref.conv1.weight)
    assert bb.forward_features(x).shape[:2] == (1, 2048)
