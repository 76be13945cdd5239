"""Chapter 05's gpu code path end to end on the fixture CLAM trees: the real-data switch (feature folders read per
slide through the bounded cache, the genes x cases table with the public code's gene selection per fold, the
feature dim from the files), fit_run with checkpoints, and an exact resume."""
from __future__ import annotations

import torch

from medvlp_lib import experiments
from medvlp_lib.experiments import momkd as E

torch.set_num_threads(1)
NAMES = ("momkd_main", "momkd_memory", "momkd_ablations")


def test_every_gpu_profile_reads_the_real_data():
    for name in NAMES:
        cfg = experiments.get(name).config("gpu")
        assert cfg.data == "real" and cfg.cohorts == ("default",)
        small = cfg.smoke()
        assert small.data == "real" and type(small) is type(cfg) and small.methods == cfg.methods
        assert small.epochs <= 2 and small.folds == 2


def test_smoke_runs_and_resumes(tmp_path):
    report = experiments.smoke(list(NAMES), out=tmp_path, verbose=False)
    for name in NAMES:
        entry = report["experiments"][name]
        assert entry["ok"], (name, entry.get("error"), entry.get("traceback"), entry.get("resume_mismatch"))
    import json
    out = json.loads((tmp_path / "results" / "momkd_main.json").read_text())
    per = out["per_seed"]["0"]
    assert per["cohort"]["feature_dim"] == 32  # the fixture's feature files, not the typed feature_dim
    assert per["cohort"]["external_slides"] > 0 and 0.0 <= per["momkd"]["auc"] <= 1.0
    assert any((tmp_path / "runs" / "momkd_main" / "seed0" / "default" / "fold1").glob("momkd*"))
    abl = json.loads((tmp_path / "results" / "momkd_ablations.json").read_text())["per_seed"]["0"]
    assert {"momkd_public_edges", "momkd_n_slots3", "momkd_no_recon"} <= set(abl)


def test_real_cohorts_keep_the_slide_cache_bounded(tmp_path):
    from medvlp_lib.data.real.fixtures import write_clam_cohort

    root = write_clam_cohort(tmp_path / "int", n=8, seed=0, dim=12, n_genes=20, missing_omics=1)
    cfg = experiments.get("momkd_main").config("gpu").smoke().replace(clam_root=str(root), cache_gb=1e-6)
    internal, external, table = E.real_cohorts(cfg)
    assert external is None and table is not None and len(table.genes) == 20
    assert len(set(internal.case_ids)) == 7  # the case without omics is left out
    assert internal.cache_limits[1] == int(1e-6 * (1 << 30))
