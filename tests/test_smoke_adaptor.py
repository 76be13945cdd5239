"""The Adaptor chapter's gpu code path end to end on fixture trees (issue 11): MIMIC-CXR pretraining of the
backbone grid through fit_run, RSNA / SIIM probes and SIIM segmentation, and exact resume."""
from __future__ import annotations

import pytest

from medvlp_lib import experiments
from medvlp_lib.config import weights_of
from medvlp_lib.experiments import adaptor as ad

NAMES = ("adaptor_downstream", "adaptor_params")


@pytest.mark.parametrize("name", NAMES)
def test_gpu_profiles_use_real_data_and_the_paper_backbones(name):
    cfg = experiments.get(name).profiles["gpu"]
    assert cfg.data == "real"
    weights = {v for _, _, v in weights_of(cfg)}
    assert any("dinov2" in w for w in weights)
    assert len([w for w in cfg.text_encoders if w]) >= 2
    assert cfg.adaptor_structure == "public"
    small = cfg.smoke()
    assert small.data == "real" and not small.pretrained and type(small) is type(cfg)


def test_smoke_adaptor(tmp_path):
    report = experiments.smoke(list(NAMES), out=tmp_path, verbose=False)
    for name in NAMES:
        entry = report["experiments"][name]
        assert entry["ok"], (name, entry.get("error"), entry.get("traceback"), entry.get("resume_mismatch"))
    rec = experiments.load  # noqa: F841 (records live under tmp_path, not results/)
    runs = list((tmp_path / "runs" / "adaptor_downstream" / "seed0").glob("*"))
    assert any(ad.short_name("vit_small_patch14_dinov2", "image") in p.name for p in runs)
