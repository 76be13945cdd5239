"""The gpu profile of every experiment: the papers' data (``data="real"``) and a smoke run of the same code path
(``cfg.smoke()``), so the book's promise "the same code at the papers' scale" is checked for every experiment.
The smoke runs themselves (fixture trees, checkpoints, resume) are in each chapter's tests/test_smoke_*.py."""
from __future__ import annotations

import dataclasses

import pytest

from medvlp_lib import experiments
from medvlp_lib.config import ExperimentConfig

NAMES = experiments.names()
EMBEDDED_AT_GPU_SCALE = {"compose_adaptor_teacher": "chapter 06's teacher and probe read only placenta photographs "
                                                    "with data='real'; no chest X-ray ResNet-50 teacher on MIMIC yet"}
DETERMINISTIC = {"adaptor_params": "counts parameters of modules: no seed changes it",
                 "rfbe_equivalence": "a gradient identity checked to float tolerance, not a seed-noise effect"}


@pytest.mark.parametrize("name", NAMES)
def test_gpu_profile_reads_the_papers_data_and_has_a_smoke_run(name):
    exp = experiments.get(name)
    gpu = exp.config("gpu")
    assert isinstance(gpu, ExperimentConfig), f"{name}: {type(gpu).__name__} does not extend ExperimentConfig"
    expected = "embedded" if name in EMBEDDED_AT_GPU_SCALE else "real"
    assert gpu.data == expected, f"{name}: the gpu profile must use data={expected!r}, has {gpu.data!r}"
    small = gpu.smoke()
    assert type(small) is type(gpu) and small.data == expected, f"{name}: smoke() must keep the gpu code path"
    for f in dataclasses.fields(small):     # weights are never needed for a smoke run
        if f.metadata.get("weights") and "pretrained" in {g.name for g in dataclasses.fields(small)}:
            assert small.pretrained is False, f"{name}: smoke() must not need pretrained weights"
    if name not in DETERMINISTIC:
        assert set(exp.seeds["cpu"]) >= set(range(5)), f"{name}: the cpu profile needs >= 5 paired seeds (0-4)"


def test_every_cpu_and_fast_profile_stays_offline():
    for name in NAMES:
        for profile in ("fast", "cpu"):
            assert experiments.get(name).config(profile).data == "embedded", (name, profile)
