"""The Adaptor chapter's gpu code path end to end on fixture trees (issue 11): MIMIC-CXR pretraining of the
backbone grid through fit_run, RSNA / SIIM probes and SIIM segmentation, and exact resume."""
from __future__ import annotations

import json

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
    runs = list((tmp_path / "runs" / "adaptor_downstream" / "seed0").glob("*"))
    assert any(ad.short_name("vit_small_patch14_dinov2", "image") in p.name for p in runs)
    # the record has the end-to-end CLIP comparator next to the Adaptor grid (the 1 % claims read both)
    rec = json.loads(next(p for p in (tmp_path / "results").rglob("adaptor_downstream*.json")).read_text())
    keys = set(rec["summary"])
    pair = "vit_small_patch14_dinov2+minilm"
    for k in (f"grid/{pair}/adaptor/rsna/auc@0.5", f"clip/{pair}/rsna/auc@0.5", f"clip/{pair}/rsna/auc@1",
              f"seg/{pair}/clip/n_train@0.5", "seg/vit_small_patch14_dinov2/n_train@0.5"):
        assert k in keys, (k, sorted(keys))
    seg = rec["per_seed"]["0"]["seg"]   # Dice is NaN (left out of the summary) when the fixture has no positive test film
    assert "siim_dice@0.5" in seg[f"{pair}/clip"] and "siim_dice@0.5" in seg["vit_small_patch14_dinov2"]
    # images were streamed: smoke() embeds 8 images at a time, so every dataset larger than that left one cache
    # entry per chunk (more entries than the 5 datasets embedded: MIMIC train + RSNA/SIIM train/test)
    assert ad.PROFILES["gpu"].smoke().stream_chunk == 8
    assert len(list((tmp_path / "cache" / "embeddings").iterdir())) > 5
