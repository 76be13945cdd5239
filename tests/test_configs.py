"""Typed experiment configurations: a misspelled key or a wrong type is an error everywhere (profile definitions,
``Experiment.config`` overrides, ``--set`` on the command line, ``build_dual_encoder``); every registered
experiment's profiles build and round-trip through the plain dict a results file records; variants round-trip."""
from __future__ import annotations

import json
from dataclasses import FrozenInstanceError, dataclass

import pytest

from medvlp_lib import experiments
from medvlp_lib.config import Config, Variant, coerce, describe, field_type, override, parse_value, require
from medvlp_lib.experiments.__main__ import list_experiments, main, parse_set
from medvlp_lib.experiments.adaptor import AdaptorConfig
from medvlp_lib.experiments.clip_baseline import ClipConfig
from medvlp_lib.methods.ssl import SSLConfig
from medvlp_lib.pipeline import DualEncoderConfig, build_dual_encoder
from medvlp_lib.utils import results_dir


# ------------------------------------------------------------------------------------------------- names
def test_misspelled_key_in_a_profile_definition_names_it_and_the_known_keys():
    base = experiments.get("clip_batch_size").config("cpu")
    with pytest.raises(ValueError, match=r"unknown key 'epoch' for ClipConfig \(did you mean 'epochs'\?\); "
                                         r"known keys: .*batch_sizes.*epochs"):
        base.replace(epoch=3)
    with pytest.raises(ValueError, match="unknown key 'lerning_rate'"):
        ClipConfig.derive(base, lerning_rate=1e-3)
    with pytest.raises(TypeError, match="epoch"):  # direct construction: Python's own error names the key
        ClipConfig(epoch=3)
    with pytest.raises(ValueError, match=r"has no field for \['batch_sizes'\]"):  # nothing is dropped silently
        experiments.msd.MSDConfig.derive(base)


def test_misspelled_override_names_it_and_the_known_keys():
    exp = experiments.get("msd_vs_baselines")
    with pytest.raises(ValueError, match=r"unknown override 'queue' for experiment 'msd_vs_baselines' \(did you mean "
                                         r"'queue_size'\?\); known keys: .*w_multi"):
        exp.config("fast", {"queue": 64})
    with pytest.raises(ValueError, match="unknown override 'ssl.stpes'"):
        experiments.get("adaptor_downstream").config("fast", {"ssl.stpes": 3})
    with pytest.raises(ValueError, match="unknown override"):
        experiments.run("clip_batch_size", "fast", overrides={"batchsizes": (16,)}, write=False, verbose=False)


def test_misspelled_set_key_on_the_command_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "clip_batch_size", "--profile", "fast", "--set", "epoch=3"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown --set key 'epoch'" in err and "did you mean 'epochs'" in err and "batch_sizes" in err
    with pytest.raises(ValueError, match="unknown --set key 'ssl.stpes'"):
        parse_set(["ssl.stpes=3"], AdaptorConfig)
    with pytest.raises(ValueError, match="key=value"):
        parse_set(["epochs"], ClipConfig)


def test_build_dual_encoder_takes_a_typed_config_only():
    with pytest.raises(TypeError, match="DualEncoderConfig"):
        build_dual_encoder({"image_encoder": "resnet18", "embed_dm": 64}, 0)
    with pytest.raises(ValueError, match="unknown key 'embed_dm'.*did you mean 'embed_dim'"):
        DualEncoderConfig().replace(embed_dm=64)
    with pytest.raises(ValueError, match="image_trainable"):
        DualEncoderConfig(image_trainable="last:0")


# ------------------------------------------------------------------------------------------------- types
def test_wrong_types_are_errors_naming_the_field():
    cfg = experiments.get("clip_batch_size").config("fast")
    with pytest.raises(TypeError, match="ClipConfig.epochs must be an integer, got 1.5"):
        cfg.replace(epochs=1.5)
    with pytest.raises(TypeError, match="ClipConfig.epochs must be an integer, got '3'"):
        cfg.replace(epochs="3")
    with pytest.raises(TypeError, match="ClipConfig.n_train"):
        cfg.replace(n_train=True)  # a bool is not a count
    with pytest.raises(TypeError, match="ClipConfig.pretrained must be True or False"):
        cfg.replace(pretrained=1)
    with pytest.raises(TypeError, match=r"ClipConfig.batch_sizes\[1\] must be an integer"):
        cfg.replace(batch_sizes=(16, "64"))
    with pytest.raises(TypeError, match="ClipConfig.proj must be one of"):
        cfg.replace(proj="transformer")
    with pytest.raises(ValueError, match=r"ClipConfig.lr must be > 0"):
        cfg.replace(lr=-1e-3)
    with pytest.raises(FrozenInstanceError):
        cfg.epochs = 3
    # lists become tuples, ints become floats where the field is a float: a config read back from JSON is equal
    same = cfg.replace(batch_sizes=[16, 128], lr=1)
    assert same.batch_sizes == (16, 128) and same.lr == 1.0 and isinstance(same.lr, float)


def test_set_values_are_parsed_to_the_field_type():
    out = parse_set(["epochs=3", "lr=1e-4", "proj=linear", "batch_sizes=(16, 64)", "text_encoder=None",
                     "pretrained=True"], ClipConfig)
    assert out == {"epochs": 3, "lr": 1e-4, "proj": "linear", "batch_sizes": (16, 64), "text_encoder": None,
                   "pretrained": True}
    assert parse_set(["ssl.steps=5"], AdaptorConfig) == {"ssl.steps": 5}
    assert parse_set(["text_encoder=emilyalsentzer/Bio_ClinicalBERT"], ClipConfig)["text_encoder"] == \
        "emilyalsentzer/Bio_ClinicalBERT"
    with pytest.raises(TypeError, match="--set epochs must be an integer, got 3.5"):
        parse_set(["epochs=3.5"], ClipConfig)
    with pytest.raises(TypeError, match="must be True or False"):
        parse_set(["pretrained=yes"], ClipConfig)
    methods = parse_set(["methods=('momkd', ('momkd', {'n_slots': 4}))"], type(experiments.get("momkd_main")
                                                                                .config("fast")))["methods"]
    assert methods == (Variant("momkd"), Variant("momkd", {"n_slots": 4}))


def test_nested_configuration_overrides_merge():
    exp = experiments.get("adaptor_downstream")
    fast = exp.config("fast")
    a = exp.config("fast", {"ssl": {"steps": 1}})
    b = exp.config("fast", {"ssl.steps": 1})
    assert a == b and a.ssl.steps == 1 and a.ssl.n_radiographs == fast.ssl.n_radiographs == 256
    assert isinstance(a.ssl, SSLConfig)
    with pytest.raises(ValueError, match=r"ssl.size \(64\) must equal image_size \(96\)"):
        exp.config("fast", {"image_size": 96})
    assert exp.config("fast", {"image_size": 96, "ssl.size": 96}).ssl.size == 96


# ------------------------------------------------------------------------------------------------- registry
def test_every_registered_experiment_builds_its_three_profiles_and_round_trips():
    for name in experiments.names():
        exp = experiments.get(name)
        cls = exp.config_class
        assert issubclass(cls, Config) and set(exp.profiles) == set(experiments.PROFILES), name
        for p in experiments.PROFILES:
            cfg = exp.config(p)
            assert type(cfg) is cls, (name, p)
            recorded = json.loads(json.dumps(cfg.to_dict()))  # what a results file holds
            assert cls.from_dict(recorded) == cfg, (name, p)
            assert exp.config_of({"config": recorded}) == cfg
            assert exp.config(p, recorded) == cfg  # the recorded dict is a valid override of every key


def test_committed_results_keep_their_config_keys():
    """The key names results files recorded before the typed configs still name fields (the ledger reads them)."""
    seen = 0
    for path in sorted(results_dir().glob("*.json")):
        rec = json.loads(path.read_text())
        if rec.get("experiment") not in experiments.names():
            continue
        fields = set(experiments.get(rec["experiment"]).config_class.field_names())
        assert set(rec["config"]) <= fields, (path.name, sorted(set(rec["config"]) - fields))
        seen += 1
    assert seen >= 10


def test_list_shows_each_profile_readably():
    text = list_experiments(["clip_batch_size", "momkd_ablations"])
    assert "clip_batch_size  [ClipConfig]" in text and "momkd_ablations  [MoMKDAblationsConfig]" in text
    assert "batch_sizes=(16, 128)" in text and "epochs=6" in text  # cpu in full
    fast = text.split("fast  seeds [0], differs from cpu in:")[1].split("gpu")[0]
    assert "epochs=1" in fast and "image_encoder" not in fast  # fast and gpu as differences
    assert "momkd(variant='no_recon')" in text
    assert all(len(line) <= 120 for line in text.splitlines())


def test_run_records_a_plain_dict_and_the_typed_set_command(tmp_path, monkeypatch):
    @dataclass(frozen=True, kw_only=True)
    class Tiny(Config):
        scale: float = 1.0
        methods: tuple[Variant, ...] = (Variant("a"),)

    monkeypatch.setenv("MEDVLP_RESULTS", str(tmp_path))
    experiments.register("_tiny", {p: Tiny() for p in experiments.PROFILES})(
        lambda cfg, seed: {v.key: cfg.scale for v in cfg.methods})
    try:
        rec = experiments.run("_tiny", "cpu", seeds=[0, 1], verbose=False,
                              overrides={"methods": (("a", {"k": 2}),), "scale": 3})
        on_disk = json.loads((tmp_path / "_tiny.json").read_text())
        assert on_disk["config"] == {"scale": 3.0, "methods": [{"name": "a", "overrides": {"k": 2}, "key": "a_k2"}]}
        assert rec["summary"]["a_k2"]["mean"] == 3.0
        # the recorded command's --set values parse back to the same configuration
        items = on_disk["command"].split(" --set ", 1)[1]
        import shlex
        again = parse_set(shlex.split(items), Tiny, "_tiny")
        assert experiments.get("_tiny").config("cpu", again) == Tiny.from_dict(on_disk["config"])
    finally:
        experiments._REGISTRY.pop("_tiny", None)


# ------------------------------------------------------------------------------------------------- variants
def test_variant_keys_and_round_trip():
    v = Variant("momkd", {"n_slots": 4})
    assert v.key == "momkd_n_slots4" and str(v) == "momkd(n_slots=4)"
    assert Variant("msd", {"momentum": 0.99}).key == "msd_momentum0.99" and Variant("abmil").key == "abmil"
    paper = Variant("adaptor", {"image_weight": 0.5}, "adaptor_paper")
    assert paper.key == "adaptor_paper" and str(paper) == "adaptor_paper: adaptor(image_weight=0.5)"
    for w in (v, Variant("adaptor", {"image_weight": 0.5}, "adaptor_paper"), Variant("abmil")):
        from dataclasses import asdict
        assert coerce(json.loads(json.dumps(asdict(w))), Variant) == w
        assert hash(coerce(asdict(w), Variant)) == hash(w)
    assert coerce("abmil", Variant) == Variant("abmil")
    assert coerce(["momkd", {"n_slots": 4}], Variant) == v
    with pytest.raises(TypeError, match="must be a Variant"):
        coerce(3, Variant, "methods[0]")
    with pytest.raises(TypeError, match="non-empty"):
        Variant("")


# ------------------------------------------------------------------------------------------------- helpers
def test_config_helpers_on_a_small_class():
    @dataclass(frozen=True, kw_only=True)
    class Small(Config):
        n: int = 1
        size: tuple[int, int] = (1, 2)
        frac: float | None = None
        table: dict[str, int] | None = None

        def __post_init__(self):
            super().__post_init__()
            require(self, positive=("n", "size"), unit=("frac",))

    s = Small(size=[3, 4], table={"a": 1})
    assert s.size == (3, 4) and field_type(Small, "frac") == (float | None)
    with pytest.raises(TypeError, match=r"Small.size must have 2 entries"):
        Small(size=(1, 2, 3))
    with pytest.raises(ValueError, match=r"Small.frac must be in \[0, 1\], got 1.5"):
        Small(frac=1.5)
    with pytest.raises(TypeError, match=r"Small.table\['a'\] must be an integer"):
        Small(table={"a": "x"})
    assert parse_value("0.5", field_type(Small, "frac")) == 0.5 and parse_value("None", float | None) is None
    assert override(s, {"n": 2}).n == 2 and override(s, None) is s
    assert describe(Small(n=2), Small()) == "n=2" and describe(Small(), Small()) == "(same)"
    assert describe(Small(n=2), Small(), sep=None) == ["n=2"]
