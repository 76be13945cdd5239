"""The gpu code path of chapters 01-04 end to end on fixture trees (``experiments.smoke``): MIMIC-CXR-JPG through
the real loaders, the MSD paper's Swin-Tiny (random weights, 32 px) + a BERT text encoder (the packaged MiniLM,
nothing downloaded), checkpoints, the downstream evaluation, and a resumed second run with identical metrics."""
from __future__ import annotations

import pytest

from medvlp_lib import experiments
from medvlp_lib.config import weights_of
from medvlp_lib.models.encoders import TINY_TEXT_ENCODER
from medvlp_lib.models.paper_msd import PAPER

NAMES = ("clip_batch_size", "msd_vs_baselines", "msd_alpha_beta", "msd_loss_weights", "msd_momentum_queue",
         "msd_batch_size", "rfbe_equivalence")


@pytest.mark.parametrize("name", NAMES)
def test_gpu_profile_is_real_data_and_smoke_shrinks_it(name):
    exp = experiments.get(name)
    gpu = exp.config("gpu")
    assert gpu.data == "real"
    small = gpu.smoke()
    assert type(small) is type(gpu) and small.data == "real"
    if name == "rfbe_equivalence":
        return
    assert gpu.image_encoder == PAPER["image_encoder"] and gpu.text_encoder == PAPER["text_encoder"]
    assert gpu.pretrained and gpu.image_size == 224 and gpu.text_trainable == "all"
    assert {(f, s, n) for f, s, n in weights_of(gpu)} == {("image_encoder", "timm", PAPER["image_encoder"]),
                                                          ("text_encoder", "hf", PAPER["text_encoder"])}
    assert not small.pretrained and small.text_encoder == TINY_TEXT_ENCODER and small.tiny
    assert small.image_encoder == gpu.image_encoder                          # the same class, its smallest instance
    assert small.image_size <= 64
    if hasattr(gpu, "queue_size"):
        assert gpu.queue_size == 4096 and gpu.momentum == 0.995 and gpu.batch_size == 16
    if name == "msd_batch_size":
        assert max(gpu.effective_batches) == 512


def test_cpu_seeds_are_five():
    for name in NAMES[:-1]:
        assert experiments.get(name).seeds["cpu"] == (0, 1, 2, 3, 4), name


@pytest.mark.parametrize("name", NAMES)
def test_smoke_runs_and_resumes(name, tmp_path):
    report = experiments.smoke([name], out=tmp_path, verbose=False)
    entry = report["experiments"][name]
    assert entry["ok"], entry.get("error") or entry.get("resume_mismatch") or entry
