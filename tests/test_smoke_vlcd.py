"""VLCD's gpu code path end to end on fixture trees (placenta photo folder + reports, ImageNet-style folder):
every experiment's smoke run passes, including the resume check, and every gpu profile reads the real data."""
from __future__ import annotations

import torch

from medvlp_lib import experiments
from medvlp_lib.config import weights_of

torch.set_num_threads(1)

NAMES = ("vlcd_students", "vlcd_predistill", "vlcd_lambda")


def test_gpu_profiles_use_real_data_and_paper_weights():
    for name in NAMES:
        cfg = experiments.get(name).config("gpu")
        assert cfg.data == "real"
        found = {w for _, _, w in weights_of(cfg)}
        assert {"resnet50", "mobilenetv3_large_100", "efficientnet_b0", "efficientformer_l1"} <= found
        small = cfg.smoke()
        assert small.data == "real" and type(small) is type(cfg) and not weights_of(small)
        assert experiments.get(name).seeds["cpu"] == (0, 1, 2, 3, 4)


def test_smoke_runs_and_resumes(tmp_path):
    report = experiments.smoke(list(NAMES), out=tmp_path, verbose=False)
    for name in NAMES:
        entry = report["experiments"][name]
        assert entry["ok"], (name, entry.get("error"), entry.get("traceback"), entry.get("resume_mismatch"))
    # the students table holds the student trained alone for every student
    import json
    data = json.loads((tmp_path / "results" / "vlcd_students.json").read_text())
    for student in ("mobilenetv3", "efficientnet_b0", "efficientformer_l1"):
        assert f"{student}/clip/clean" in data["summary"] or f"{student}/clip/final_l_t" in data["summary"]
