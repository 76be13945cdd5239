"""Chapter 07: the ``adaptor_downstream`` / ``adaptor_params`` experiments on a tiny configuration (every key the
ledger's evaluators read is produced) and the four ``adaptor-*`` claim evaluators on hand-made records."""
from __future__ import annotations

import copy
import math
import zlib

import numpy as np
import pytest
import torch

from medvlp_lib.experiments import _summarise, get
from medvlp_lib.eval import multiclass_probe_accuracy
from medvlp_lib.experiments.adaptor import CLAIMS, adaptor_downstream, adaptor_params, three_class_labels
from medvlp_lib.ledger import CLAIMS as LEDGER, VERDICTS

torch.set_num_threads(1)

TINY = dict(n_train=96, n_test=64, ssl=dict(n_radiographs=48, n_natural=16, steps=2, batch_size=16),
            adaptor_width=32, adaptor_heads=4, adaptor_embed_dim=32, adaptor_epochs=1, adaptor_batch=32,
            e2e_batch=32, clip_epochs=0.34, msd_epochs=0.34, msd_queue=64, vlcd_epochs=0.34, seg_steps=2,
            seg_batch=16, seg_width=16, tsne_perplexity=5.0, paper_scale_params=True)

# the summary keys each evaluator reads (mirrors experiments/adaptor.py)
KEYS = {
    "adaptor-params": ["params/paper_scale/reduction_pct", "params/paper_scale/adaptor/trainable",
                       "params/paper_scale/clip/trainable", "params/ours/reduction_pct"],
    "adaptor-1pct": [f"cls/{m}/binary_auc@0.01" for m in ("adaptor", "clip", "msd")]
    + ["cls/adaptor/three_class_acc@0.01", "cls/clip/three_class_acc@0.01"],
    "adaptor-clusters": ["silhouette/adaptor/joint_space", "silhouette/adaptor/joint_tsne", "silhouette/frozen/space",
                         "silhouette/frozen/tsne"],
    "adaptor-seg": [f"seg/{m}/pleural_effusion_dice@0.01" for m in ("frozen", "clip", "msd")]
    + ["seg/frozen/pleural_effusion_dice@1"],
}


@pytest.fixture(scope="module")
def tiny_record(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDVLP_CACHE", str(tmp_path_factory.mktemp("cache")))  # SSL backbone + embedding caches
    try:
        cfg = get("adaptor_downstream").config("fast", TINY)
        metrics = adaptor_downstream(cfg, 0)
    finally:
        mp.undo()
    # two identical "seeds" give the n >= 2 summary the evaluators compare with
    return {"config": cfg.to_dict(), "per_seed": {"0": metrics, "1": metrics},
            "summary": _summarise({0: metrics, 1: metrics}), "metrics": metrics}


def test_ledger_rows_have_evaluators():
    ids = {c.id for c in LEDGER if c.paper == "Adaptor"}
    assert set(CLAIMS) == ids == set(KEYS)


def test_profiles_and_fast_ssl_is_tiny():
    exp = get("adaptor_downstream")
    assert set(exp.profiles) == {"fast", "cpu", "gpu"}
    fast, cpu = exp.config("fast"), exp.config("cpu")
    assert fast.ssl.steps * fast.ssl.batch_size <= 0.1 * 400 * 64  # the fast profile never pays for SSL
    assert cpu.fractions == fast.fractions == (0.01, 0.1, 1.0)
    assert set(get("adaptor_params").profiles) == {"fast", "cpu", "gpu"}


def test_tiny_run_has_every_key_the_evaluators_read(tiny_record):
    s = tiny_record["summary"]
    for cid, keys in KEYS.items():
        missing = [k for k in keys if k not in s]
        assert not missing, (cid, missing)
    m = tiny_record["metrics"]
    for name in ("frozen", "adaptor", "adaptor_paper", "clip", "msd", "vlcd"):
        for f in ("0.01", "0.1", "1"):
            auc, acc = m["cls"][name][f"binary_auc@{f}"], m["cls"][name][f"three_class_acc@{f}"]
            assert 0.0 <= auc <= 1.0 and 0.0 <= acc <= 1.0, (name, f, auc, acc)
        assert -1.0 <= m["silhouette"][name]["space"] <= 1.0
    for enc in ("frozen", "clip", "msd"):
        assert 1 <= m["seg"][enc]["n_train@0.01"] <= m["seg"][enc]["n_train@1"]
    # the Adaptor is a small fraction of end-to-end training at paper size, and counted from modules
    p = m["params"]
    assert p["paper_scale"]["adaptor"]["trainable"] < p["paper_scale"]["clip"]["trainable"]
    assert 0 < p["ours"]["reduction_pct"] < 100
    assert set(m["steps"]) == {"adaptor", "adaptor_paper", "adaptor_i2t", "clip", "msd", "vlcd"}
    assert -1.0 <= m["silhouette"]["adaptor"]["joint_space"] <= 1.0
    att = m["attention"]["adaptor"]
    if att["n"]:
        assert {"pointing_uniform", "mass_uniform", "mass_random"} <= set(att)
    assert all(math.isfinite(v) for v in m["final_loss"].values())
    for cid, fn in CLAIMS.items():
        ours, verdict, why = fn(tiny_record)
        assert verdict in VERDICTS and ours and why, cid


def test_adaptor_params_experiment_feeds_the_params_claim():
    cfg = get("adaptor_params").config("fast")
    m = adaptor_params(cfg, 0)
    rec = {"config": cfg.to_dict(), "summary": _summarise({0: m, 1: m})}
    ours, verdict, why = CLAIMS["adaptor-params"](rec)
    assert verdict in ("reproduced", "contradicted") and "M vs" in ours
    # the public structure at paper size: ~12.2 M (the paper's "~12 M")
    assert 12.0e6 < m["params"]["paper_scale"]["adaptor"]["trainable"] < 12.5e6


def test_three_class_labels_and_multiclass_probe():
    class DS:
        label_names = ["normal", "opacity", "pleural_effusion", "other"]
        labels = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1], [0, 1, 1, 0], [0, 0, 0, 1]], float)

    assert three_class_labels(DS, ("normal", "opacity", "pleural_effusion")).tolist() == [0, 1, 2, -1, -1]
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 40)
    x = np.eye(3)[y] * 3 + rng.normal(size=(120, 3))
    out = multiclass_probe_accuracy(x, y, x, y, (0.1, 1.0), seed=0)
    assert out[1.0]["acc"] > 0.9 and out[0.1]["n_train"] == 12


# --------------------------------------------------------------------------------------------------
# evaluators on hand-made records
# --------------------------------------------------------------------------------------------------
_PATTERNS = {}


def _e(mean, std=0.01, n=5, key=""):
    """A 5-seed summary entry; each key gets its own zero-mean noise pattern, so paired differences have spread."""
    rng = np.random.default_rng(zlib.crc32(key.encode()))   # stable across processes (str hash() is salted)
    z = rng.normal(size=n)
    z = (z - z.mean()) / (z.std(ddof=1) or 1.0)
    vals = [float(mean + std * v) for v in z]
    return {"mean": float(np.mean(vals)), "std": float(std), "n": n, "values": vals, "seeds": list(range(n))}


def _record(adaptor_auc=0.80, clip_auc=0.80, msd_auc=0.78, sil_adaptor=0.20, sil_frozen=0.05, sil_t_adaptor=0.4,
            sil_t_frozen=0.1, dice_frozen=0.50, dice_clip=0.50, dice_msd=0.48, red=92.0, std=0.01, n=5):
    e = {"params/paper_scale/reduction_pct": (red, 0), "params/paper_scale/adaptor/trainable": (12.2e6, 0),
         "params/paper_scale/clip/trainable": (196e6, 0), "params/ours/reduction_pct": (60.0, 0),
         "cls/adaptor/binary_auc@0.01": (adaptor_auc, std), "cls/clip/binary_auc@0.01": (clip_auc, std),
         "cls/msd/binary_auc@0.01": (msd_auc, std), "cls/adaptor/three_class_acc@0.01": (0.6, std),
         "cls/clip/three_class_acc@0.01": (0.6, std),
         "silhouette/adaptor/joint_space": (sil_adaptor, std), "silhouette/frozen/space": (sil_frozen, std),
         "silhouette/adaptor/joint_tsne": (sil_t_adaptor, std), "silhouette/frozen/tsne": (sil_t_frozen, std),
         "seg/frozen/pleural_effusion_dice@0.01": (dice_frozen, std),
         "seg/clip/pleural_effusion_dice@0.01": (dice_clip, std),
         "seg/msd/pleural_effusion_dice@0.01": (dice_msd, std), "seg/frozen/pleural_effusion_dice@1": (0.7, std)}
    s = {k: _e(m, sd, n, k) for k, (m, sd) in e.items()}
    return {"config": {"adaptor_width": 128, "adaptor_structure": "book"}, "summary": s}


def test_claim_params_verdicts():
    assert CLAIMS["adaptor-params"](_record(red=92.0))[1] == "reproduced"
    ours, verdict, why = CLAIMS["adaptor-params"](_record(red=85.0))
    assert verdict == "contradicted" and "85.0 %" in ours
    rec = _record()
    del rec["summary"]["params/paper_scale/reduction_pct"]
    assert CLAIMS["adaptor-params"](rec)[1] == "not testable here"
    rec = _record()   # a record from before the public-structure count: pending, not a verdict on another module
    del rec["config"]["adaptor_structure"]
    assert CLAIMS["adaptor-params"](rec)[1] == "pending"


def test_claim_1pct_verdicts():
    assert CLAIMS["adaptor-1pct"](_record(adaptor_auc=0.80, clip_auc=0.805, std=0.004))[1] == "reproduced"  # in margin
    assert CLAIMS["adaptor-1pct"](_record(adaptor_auc=0.85, clip_auc=0.80))[1] == "reproduced"    # better
    ours, verdict, why = CLAIMS["adaptor-1pct"](_record(adaptor_auc=0.70, clip_auc=0.80))
    assert verdict == "contradicted" and "CLIP" in why
    assert CLAIMS["adaptor-1pct"](_record(adaptor_auc=0.70, clip_auc=0.6, msd_auc=0.80))[1] == "contradicted"
    # a noisy comparison straddling the margin: inconclusive
    assert CLAIMS["adaptor-1pct"](_record(adaptor_auc=0.79, clip_auc=0.80, std=0.05))[1] == "inconclusive"


def test_fewer_than_five_seeds_is_pending_for_the_seed_noise_claims():
    rec = _record(adaptor_auc=0.70, clip_auc=0.80, n=3)
    for cid in ("adaptor-1pct", "adaptor-clusters", "adaptor-seg"):
        assert CLAIMS[cid](rec)[1] == "pending", cid
    assert CLAIMS["adaptor-params"](rec)[1] == "reproduced"  # a count, not a noisy estimate


def test_claim_clusters_verdicts():
    assert CLAIMS["adaptor-clusters"](_record())[1] == "reproduced"
    assert CLAIMS["adaptor-clusters"](_record(sil_adaptor=0.0, sil_frozen=0.2))[1] == "contradicted"
    assert CLAIMS["adaptor-clusters"](_record(sil_adaptor=0.07, sil_frozen=0.05, sil_t_adaptor=0.12, sil_t_frozen=0.1,
                                              std=0.05))[1] == "inconclusive"
    rec = _record()   # a record from before the joint embedding: pending, not an error
    for k in ("silhouette/adaptor/joint_space", "silhouette/adaptor/joint_tsne"):
        del rec["summary"][k]
    assert CLAIMS["adaptor-clusters"](rec)[1] == "pending"


def test_claim_seg_verdicts():
    assert CLAIMS["adaptor-seg"](_record())[1] == "reproduced"
    ours, verdict, why = CLAIMS["adaptor-seg"](_record(dice_frozen=0.30, dice_clip=0.50))
    assert verdict == "contradicted" and "CLIP" in why
    assert CLAIMS["adaptor-seg"](_record(dice_frozen=0.60, dice_clip=0.50))[1] == "reproduced"
    assert CLAIMS["adaptor-seg"](_record(dice_frozen=0.49, dice_clip=0.50, std=0.05))[1] == "inconclusive"


def _real_record(adaptor_auc=0.85, clip_auc=0.85, dice_frozen=0.62, dice_clip=0.62, std=0.01, with_clip=True):
    """A data='real' (gpu) summary: the grid's Adaptor, the frozen backbone's decoder and the end-to-end CLIP."""
    p = "vit_base_patch14_dinov2+Bio_ClinicalBERT"
    e = {f"grid/{p}/adaptor/rsna/auc@0.01": adaptor_auc, "seg/vit_base_patch14_dinov2/siim_dice@0.01": dice_frozen}
    if with_clip:
        e.update({f"clip/{p}/rsna/auc@0.01": clip_auc, f"seg/{p}/clip/siim_dice@0.01": dice_clip})
    return {"config": {"adaptor_width": 768}, "summary": {k: _e(m, std, 5, k) for k, m in e.items()}}


def test_claims_on_a_real_record_compare_with_the_real_clip():
    for cid in ("adaptor-1pct", "adaptor-seg"):
        assert CLAIMS[cid](_real_record())[1] == "reproduced", cid                 # within the 2-point margin
        ours, verdict, why = CLAIMS[cid](_real_record(adaptor_auc=0.70, dice_frozen=0.30))
        assert verdict == "contradicted" and "CLIP" in ours, cid
        assert CLAIMS[cid](_real_record(with_clip=False))[1] == "pending", cid     # no comparator yet


def test_committed_record_gives_a_valid_verdict():
    from medvlp_lib.experiments import load
    for cid, res in (("adaptor-1pct", "adaptor_downstream"), ("adaptor-seg", "adaptor_downstream"),
                     ("adaptor-clusters", "adaptor_downstream"), ("adaptor-params", "adaptor_params")):
        try:
            rec = load(res, "cpu")
        except FileNotFoundError:
            continue
        assert CLAIMS[cid](rec)[1] in ("reproduced", "contradicted", "inconclusive", "not testable here", "pending")


def test_evaluators_do_not_mutate_records():
    rec = _record()
    before = copy.deepcopy(rec)
    for fn in CLAIMS.values():
        fn(rec)
    assert rec == before


def test_competitive_verdicts_flag_large_seed_noise():
    quiet = CLAIMS["adaptor-seg"](_record(std=0.01))[2]
    noisy = CLAIMS["adaptor-seg"](_record(dice_frozen=0.80, dice_clip=0.50, std=0.12))
    assert noisy[1] == "reproduced" and "weak evidence" in noisy[2] and "weak evidence" not in quiet


def test_msd_image_augmentation_follows_chapter_02():
    """MSD sees un-augmented films on fast/cpu (as CLIP and chapter 02's msd_vs_baselines), augmented ones on gpu."""
    from medvlp_lib.experiments import adaptor as adp
    from medvlp_lib.experiments.msd import PROFILES as MSD_PROFILES
    for p in ("fast", "cpu", "gpu"):
        assert adp.PROFILES[p].msd_image_augment is MSD_PROFILES[p].image_augment, p
