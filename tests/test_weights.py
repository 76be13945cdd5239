"""python -m medvlp_lib.weights: the weights the configurations name, found by their fields, checked in the local
caches and fetched only when asked (no network here: the fetchers are replaced)."""
from __future__ import annotations

import dataclasses
import os

import pytest

from medvlp_lib import experiments, weights
from medvlp_lib.config import ExperimentConfig, weights_field


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Inner(ExperimentConfig):
    text: str = weights_field("org/bert-a", source="hf")


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Cfg(ExperimentConfig):
    image: str = weights_field("resnet50", source="timm")
    texts: tuple = weights_field(("org/bert-a", "org/bert-b"), source="hf")
    none: str | None = weights_field(None, source="hf")
    inner: _Inner = dataclasses.field(default_factory=_Inner)
    lr: float = 0.1


class _Exp:
    def __init__(self, cfg):
        self.cfg = cfg

    def config(self, profile):
        return self.cfg


@pytest.fixture
def fake_registry(monkeypatch):
    reg = {"exp_a": _Exp(_Cfg()), "exp_b": _Exp(_Cfg(image="swin_tiny_patch4_window7_224", texts=()))}
    monkeypatch.setattr(experiments, "names", lambda: list(reg))
    monkeypatch.setattr(experiments, "get", lambda n: reg[n])
    return reg


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    return tmp_path


def _put_in_hub(cache, repo_id: str, files) -> None:
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("abc123")
    for f in files:
        path = folder / "snapshots" / "abc123" / f
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")


def test_needed_walks_every_weights_field_once_with_its_users(fake_registry):
    got = {(e.source, e.name): e.used_by for e in weights.needed("gpu")}
    assert set(got) == {("timm", "resnet50"), ("timm", "swin_tiny_patch4_window7_224"), ("hf", "org/bert-a"),
                        ("hf", "org/bert-b")}
    assert got[("hf", "org/bert-a")] == ("exp_a:inner.text", "exp_a:texts", "exp_b:inner.text")
    assert weights.needed("gpu", ["exp_b"])[0].used_by == ("exp_b:inner.text",)


def test_presence_is_read_from_the_local_caches(fake_registry, hub_cache, tmp_path):
    assert {e.name for e in weights.missing("gpu")} == {"resnet50", "swin_tiny_patch4_window7_224", "org/bert-a",
                                                        "org/bert-b"}
    _put_in_hub(hub_cache, "org/bert-a", ["config.json", "model.safetensors"])
    _put_in_hub(hub_cache, "org/bert-b", ["config.json"])                     # no weights file: still missing
    _put_in_hub(hub_cache, weights._timm_hub_id("resnet50"), ["model.safetensors"])
    assert {e.name for e in weights.missing("gpu")} == {"swin_tiny_patch4_window7_224", "org/bert-b"}
    local = tmp_path / "my-bert"
    local.mkdir()
    (local / "config.json").write_text("{}")
    assert weights.is_present(weights.WeightsEntry("hf", str(local), ()))
    with pytest.raises(ValueError, match="unknown weights source"):
        weights.is_present(weights.WeightsEntry("zip", "x", ()))


def test_check_names_what_is_missing_and_download_fetches_only_that(fake_registry, hub_cache, monkeypatch, capsys):
    _put_in_hub(hub_cache, "org/bert-a", ["config.json", "model.safetensors"])
    assert weights.main(["check", "--profile", "gpu"]) == 1
    out, err = capsys.readouterr()
    assert "MISSING" in out and "org/bert-b" in out and "3 of 4 weights are missing" in err
    assert "medvlp_lib.weights download --profile gpu" in err
    assert weights.main(["list", "--profile", "gpu"]) == 0

    calls, env_seen = [], []
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def fake(source):
        def fetch(name):
            env_seen.append(os.environ.get("HF_HUB_OFFLINE"))
            calls.append((source, name))
        return fetch

    monkeypatch.setattr(weights, "FETCHERS", {s: fake(s) for s in weights.SOURCES})
    fetched = weights.download("gpu", echo=lambda *_: None)
    assert sorted(calls) == [("hf", "org/bert-b"), ("timm", "resnet50"), ("timm", "swin_tiny_patch4_window7_224")]
    assert [e.name for e in fetched] == [n for _, n in sorted(calls)]
    assert env_seen == [None] * 3 and os.environ["HF_HUB_OFFLINE"] == "1"      # online only while fetching

    def broken(name):
        raise OSError("no route to host")
    monkeypatch.setattr(weights, "FETCHERS", {s: broken for s in weights.SOURCES})
    with pytest.raises(RuntimeError, match=r"org/bert-b.*exp_a:texts.*no route to host"):
        weights.download("gpu", echo=lambda *_: None)


def test_every_gpu_profile_weights_name_is_resolvable():
    """The real registry: every timm name the gpu profiles declare has hub weights (a typo fails here)."""
    for entry in weights.needed("gpu"):
        if entry.source == "timm":
            assert weights._timm_hub_id(entry.name)
