"""Results files, the experiment registry, the claims ledger and device/seed helpers."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from medvlp_lib import ledger
from medvlp_lib.config import Config
from medvlp_lib.experiments import flatten, register, run, _REGISTRY
from medvlp_lib.results import summary_entry, mean_std, read_result, write_result
from medvlp_lib.utils import autocast, get_device, seed_everything


def test_write_result_records_provenance(tmp_path):
    path = write_result("demo", {"metric": np.float32(0.5), "arr": np.arange(3), "t": torch.tensor([1.0])},
                        profile="cpu", seeds=[0, 1], command="python x.py", wall_time_s=1.234, directory=tmp_path)
    rec = json.loads(path.read_text())
    assert rec["command"] == "python x.py" and rec["profile"] == "cpu" and rec["seeds"] == [0, 1]
    assert rec["wall_time_s"] == 1.23 and rec["metric"] == 0.5 and rec["arr"] == [0, 1, 2] and rec["t"] == [1.0]
    assert "commit" in rec and "machine" in rec and "created" in rec
    assert read_result("demo", directory=tmp_path)["metric"] == 0.5


@pytest.mark.parametrize("bad", ["", "a/b", ".hidden"])
def test_write_result_rejects_bad_names(tmp_path, bad):
    with pytest.raises(ValueError, match="result name"):
        write_result(bad, {}, directory=tmp_path)


def test_read_result_missing_says_how_to_create(tmp_path):
    with pytest.raises(FileNotFoundError, match="medvlp_lib.experiments run nothing_here"):
        read_result("nothing_here", directory=tmp_path)


def test_mean_std():
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(np.sqrt(2.0)))
    assert mean_std([5.0]) == (5.0, 0.0)
    with pytest.raises(ValueError):
        mean_std([])


def test_flatten_nested_metrics():
    assert flatten({"b16": {"r1": 1, "curve": [1, 2]}, "x": 2.5, "flag": True}) == {"b16/r1": 1.0, "x": 2.5}


@dataclass(frozen=True, kw_only=True)
class _ToyConfig(Config):
    scale: float = 1.0


def test_experiment_run_aggregates_over_seeds(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDVLP_RESULTS", str(tmp_path))
    profiles = {p: _ToyConfig() for p in ("fast", "cpu", "gpu")}

    @register("_toy", profiles)
    def _toy(cfg, seed):
        return {"a": {"m": cfg.scale * seed}}

    try:
        rec = run("_toy", "cpu", seeds=[1, 2, 3], verbose=False)
        assert rec["summary"]["a/m"]["mean"] == pytest.approx(2.0)
        assert rec["summary"]["a/m"]["std"] == pytest.approx(1.0)
        on_disk = json.loads((tmp_path / "_toy.json").read_text())
        assert on_disk["command"].endswith("run _toy --profile cpu --seeds 1 2 3")
        assert on_disk["seeds"] == [1, 2, 3] and on_disk["profile"] == "cpu" and on_disk["config"] == {"scale": 1.0}
        rec = run("_toy", "cpu", seeds=[1], overrides={"scale": 2}, verbose=False)
        assert rec["summary"]["a/m"]["mean"] == 2.0 and rec["config"] == {"scale": 2.0}
        assert json.loads((tmp_path / "_toy.json").read_text())["command"].endswith("--seeds 1 --set scale=2.0")
        run("_toy", "fast", seeds=[0], verbose=False)
        assert (tmp_path / "tmp" / "_toy__fast.json").exists()  # fast runs never overwrite committed results
        with pytest.raises(ValueError, match="unknown override"):
            run("_toy", "cpu", seeds=[0], overrides={"nope": 1}, verbose=False)
        with pytest.raises(ValueError, match="profile must be one of"):
            run("_toy", "huge", verbose=False)
    finally:
        _REGISTRY.pop("_toy", None)


def test_register_requires_every_profile_as_one_config_class():
    with pytest.raises(ValueError, match="missing"):
        register("_bad", {"fast": _ToyConfig()})
    with pytest.raises(TypeError, match="one Config subclass"):
        register("_bad", {p: {"scale": 1.0} for p in ("fast", "cpu", "gpu")})


def test_relation_reads_the_paired_interval():
    seeds = [0, 1, 2, 3, 4]
    a = {"mean": 0.30, "values": [0.30, 0.31, 0.29, 0.30, 0.30], "seeds": seeds}
    b = {"mean": 0.20, "values": [0.20, 0.22, 0.19, 0.20, 0.19], "seeds": seeds}
    assert ledger.relation(a, b) == "above"
    assert ledger.relation(b, a) == "below"
    # a large shared seed effect: unpaired it would be noise, paired the difference is steady
    shared = {"mean": 0.5, "values": [0.1, 0.9, 0.3, 0.7, 0.5], "seeds": seeds}
    shifted = {"mean": 0.51, "values": [0.11, 0.91, 0.31, 0.71, 0.51], "seeds": seeds}
    assert ledger.relation(shifted, shared) == "above"
    noisy = {"mean": 0.21, "values": [0.10, 0.35, 0.15, 0.30, 0.15], "seeds": seeds}
    assert ledger.relation(noisy, b) == "within seed noise of"
    assert ledger.relation(a, {"mean": 0.25}) == "above"            # a constant pairs with every seed
    one_seed = {"mean": 0.9, "values": [0.9], "seeds": [0]}
    assert ledger.relation(one_seed, {"mean": 0.2}) == "within seed noise of"  # one seed is never evidence


def test_ledger_pending_without_results(tmp_path):
    rows = ledger.evaluate_claims(directory=tmp_path)
    assert len(rows) == len(ledger.CLAIMS) and all(r["verdict"] == "pending" for r in rows)


def test_ledger_reads_results_and_gives_verdict(tmp_path):
    seeds = [0, 1, 2, 3, 4]
    wiggle = [-0.01, 0.005, 0.0, 0.01, -0.005]

    def entry(m, w=1.0):
        return summary_entry([m + w * x for x in wiggle], seeds=seeds)
    summary = {"b16/i2t_R@1": entry(0.05), "b128/i2t_R@1": entry(0.12, 0.5),
               "b16/zero_shot_auc": entry(0.6), "b128/zero_shot_auc": entry(0.7)}
    write_result("clip_batch_size", {"summary": summary}, profile="cpu", seeds=seeds, directory=tmp_path)
    row = {r["id"]: r for r in ledger.evaluate_claims(directory=tmp_path)}["clip-small-batch"]
    assert row["verdict"] == "reproduced" and row["n"] == 5 and row["lo"] > 0
    summary["b128/i2t_R@1"] = entry(0.05, -1.0)          # no difference: the interval excludes the paper's effect
    write_result("clip_batch_size", {"summary": summary}, profile="cpu", seeds=seeds, directory=tmp_path)
    row = {r["id"]: r for r in ledger.evaluate_claims(directory=tmp_path)}["clip-small-batch"]
    assert row["verdict"] in ("contradicted", "inconclusive")
    write_result("clip_batch_size", {"summary": summary}, profile="cpu", seeds=[0, 1, 2], directory=tmp_path)


def test_device_and_seed_helpers(monkeypatch):
    assert get_device("cpu").type == "cpu"
    monkeypatch.delenv("MEDVLP_DEVICE", raising=False)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            get_device("cuda")
    seed_everything(3)
    a = torch.rand(3)
    seed_everything(3)
    assert torch.equal(a, torch.rand(3))
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)
    with autocast("cpu"):  # a no-op off CUDA
        assert torch.ones(1).dtype == torch.float32


def test_package_re_exports_resolve():
    """Every lazily re-exported name resolves to the object in its home module (one mechanism, one home)."""
    import importlib

    for pkg in ("medvlp_lib.methods", "medvlp_lib.models"):
        mod = importlib.import_module(pkg)
        for name, sub in mod._LAZY.items():
            home = importlib.import_module(f"{pkg}.{sub}")
            assert getattr(mod, name) is getattr(home, name), f"{pkg}.{name}"
            assert name in dir(mod)
        with pytest.raises(AttributeError, match="no attribute"):
            getattr(mod, "not_a_name")
    from medvlp_lib import eval as ev
    from medvlp_lib.eval import segmentation
    assert ev.dice_per_image is segmentation.dice_per_image


def test_default_wall_time_counts_from_process_start(tmp_path):
    """A benchmark that imports ``medvlp_lib.results`` only at the end still records its whole run time."""
    import json
    import subprocess
    import sys
    code = ("import time; time.sleep(1.5)\n"
            "from medvlp_lib.results import write_result\n"
            f"write_result('late', {{}}, directory={str(tmp_path)!r})\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert json.loads((tmp_path / "late.json").read_text())["wall_time_s"] >= 1.5


def test_runner_jobs_runs_seeds_in_processes_with_the_same_results():
    """``--jobs 2`` (seeds in spawned one-thread processes) gives the serial run's per-seed metrics."""
    from medvlp_lib import experiments

    serial = experiments.run("rfbe_equivalence", "fast", seeds=[0, 1], write=False, verbose=False)
    parallel = experiments.run("rfbe_equivalence", "fast", seeds=[0, 1], write=False, verbose=False, jobs=2)
    assert set(parallel["per_seed"]) == {"0", "1"}
    for key, entry in serial["summary"].items():
        if "rel_err" in key:  # round-off measurements (~1e-16) legitimately change with the thread count
            continue
        assert parallel["summary"][key]["values"] == pytest.approx(entry["values"], rel=1e-6), key
    with pytest.raises(ValueError, match="jobs"):
        experiments.run("rfbe_equivalence", "fast", seeds=[0], write=False, verbose=False, jobs=0)


def test_recorded_command_is_the_one_a_reader_types(tmp_path):
    """``python -m pkg.mod`` is recorded as such (not as the module's absolute path in one checkout), and a
    script below the working directory by its relative path."""
    import subprocess
    import sys

    pkg = tmp_path / "pkgx"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "tool.py").write_text("from medvlp_lib.results import current_command\nprint(current_command())\n")
    run = lambda *a: subprocess.run([sys.executable, *a], cwd=tmp_path, capture_output=True, text=True,  # noqa: E731
                                    check=True).stdout.strip()
    assert run("-m", "pkgx.tool", "--seeds", "0 1") == "python -m pkgx.tool --seeds '0 1'"
    assert run("pkgx/tool.py", "--quick") == "python pkgx/tool.py --quick"


def test_git_commit_is_dirty_for_code_changes_but_not_for_results_files(tmp_path, monkeypatch):
    import subprocess

    from medvlp_lib import utils

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "a.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    monkeypatch.setattr(utils, "project_root", lambda: tmp_path)
    sha = utils.git_commit()
    assert len(sha) == 40
    (tmp_path / "results" / "a.json").write_text('{"new": 1}')       # a re-run writes results at one commit
    assert utils.git_commit() == sha
    (tmp_path / "code.py").write_text("x = 2\n")
    assert utils.git_commit() == sha + "-dirty"
