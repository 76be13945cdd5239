"""IU X-Ray report parsing, label mapping, splits and error messages."""
from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from medvlp_lib.data.reports import (LABELS, clean_text, load_reports, map_finding, parse_mesh_term,
                                     split_ids)


@pytest.fixture(scope="module")
def corpus():
    return load_reports()


def test_all_reports_accounted_for(corpus):
    assert len(corpus) + corpus.n_skipped == 3955
    assert len(corpus) > 3900
    assert set(corpus.skipped) <= {"no_text", "unparsable_xml"}
    assert all(r.text for r in corpus.reports)


def test_labels_contract():
    assert LABELS == ("cardiomegaly", "pleural_effusion", "opacity", "atelectasis", "nodule",
                      "emphysema", "edema", "pneumothorax", "device", "normal")


def test_known_report_fields(corpus):
    r = corpus.get("CXR1")
    assert r.mesh == ("normal",)
    assert r.impression == "Normal chest x-ray."
    assert "XXXX" not in r.text and r.text.startswith(r.findings)
    assert r.image_ids == ("CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001")
    assert corpus["CXR1"] is r and corpus[0] is r


def test_no_placeholder_left(corpus):
    assert not any("XXXX" in r.text for r in corpus.reports)
    assert not any("  " in r.text or " ." in r.text for r in corpus.reports)


def test_parse_mesh_term():
    f = parse_mesh_term("Opacity/lung/upper lobe/right")
    assert f.name == "Opacity" and f.locations == {"lung", "upper lobe", "right"}
    assert f.severity is None and f.side == "right" and f.label == "opacity"
    g = parse_mesh_term("Cardiomegaly/mild")
    assert (g.name, g.severity, g.severity_value, g.locations) == ("Cardiomegaly", "mild", 1.0, frozenset())
    h = parse_mesh_term("Calcified Granuloma/lung/upper lobe/left/multiple")
    assert h.modifiers == ("multiple",) and h.side == "left" and h.label == "nodule"
    e = parse_mesh_term("Pleural Effusion/bilateral/small")
    assert e.side == "bilateral" and e.severity == "small" and e.label == "pleural_effusion"
    with pytest.raises(ValueError, match="empty MeSH term"):
        parse_mesh_term(" / ")


@pytest.mark.parametrize("name,quals,expected", [
    ("Airspace Disease", (), ("opacity",)),
    ("Infiltrate", (), ("opacity",)),
    ("Calcinosis", ("lung",), ("nodule",)),
    ("Calcinosis", ("aorta",), ()),
    ("Pulmonary Disease, Chronic Obstructive", (), ("emphysema",)),
    ("Lung", ("hyperdistention",), ("emphysema",)),
    ("Lung", ("hypoinflation",), ()),
    ("Cardiac Shadow", ("enlarged",), ("cardiomegaly",)),
    ("Pulmonary Congestion", (), ("edema",)),
    ("Catheters, Indwelling", ("right",), ("device",)),
    ("Hydropneumothorax", (), ("pleural_effusion", "pneumothorax")),
    ("Thoracic Vertebrae", ("degenerative",), ()),
])
def test_synonyms(name, quals, expected):
    assert map_finding(name, quals) == expected


def test_clean_text_rule():
    assert clean_text("Normal chest x-XXXX.") == "Normal chest x-ray."
    assert clean_text("There are no XXXX of effusion.  XXXX XXXX. Heart size XXXX, normal.") == \
        "There are no of effusion. Heart size, normal."
    assert clean_text("XXXX") == "" and clean_text(None) == ""


def test_labels_matrix(corpus):
    m = corpus.labels()
    assert m.shape == (len(corpus), len(LABELS)) and m.dtype == np.float32
    assert set(np.unique(m)) <= {0.0, 1.0}
    normal = [i for i, r in enumerate(corpus.reports) if r.mesh == ("normal",)]
    assert len(normal) > 1000
    assert (m[normal, LABELS.index("normal")] == 1).all()
    assert m[normal].sum(1).max() == 1
    counts = corpus.label_counts()
    assert counts["normal"] == len(normal) and counts["pneumothorax"] >= 15
    assert all(counts[l] > 0 for l in LABELS)
    sub = corpus.labels(["CXR1"], label_names=("normal", "opacity"))
    assert sub.tolist() == [[1.0, 0.0]]


def test_unknown_label_and_uid(corpus):
    with pytest.raises(ValueError, match="unknown label name 'pneumonia'"):
        corpus.labels(label_names=("pneumonia",))
    with pytest.raises(KeyError, match="CXR_nope"):
        corpus.get("CXR_nope")
    assert sum(corpus.unknown_terms.values()) < 50


def test_missing_archive(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.tgz"):
        load_reports(tmp_path / "missing.tgz")


def test_corrupt_archive(tmp_path):
    bad = tmp_path / "bad.tgz"
    bad.write_bytes(b"this is not a gzip file at all")
    with pytest.raises(ValueError, match="bad.tgz"):
        load_reports(bad)


def test_archive_without_xml(tmp_path):
    p = tmp_path / "empty.tgz"
    with tarfile.open(p, "w:gz") as tf:
        data = b"hello"
        info = tarfile.TarInfo("ecgen-radiology/readme.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match="no .xml members"):
        load_reports(p)


def test_small_archive_counts_skips(tmp_path):
    p = tmp_path / "tiny.tgz"
    good = (b'<eCitation><uId id="CXR7"/><Abstract><AbstractText Label="FINDINGS">Heart XXXX normal.'
            b'</AbstractText><AbstractText Label="IMPRESSION">No acute disease.</AbstractText></Abstract>'
            b'<MeSH><major>Cardiomegaly/mild</major></MeSH><parentImage id="A"/></eCitation>')
    empty = b'<eCitation><uId id="CXR8"/><AbstractText Label="FINDINGS">XXXX</AbstractText></eCitation>'
    broken = b"<eCitation><unclosed>"
    with tarfile.open(p, "w:gz") as tf:
        for name, data in [("ecgen-radiology/7.xml", good), ("ecgen-radiology/8.xml", empty),
                           ("ecgen-radiology/9.xml", broken)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    c = load_reports(p)
    assert len(c) == 1 and c.skipped == {"no_text": 1, "unparsable_xml": 1} and c.n_skipped == 2
    r = c.get("CXR7")
    assert r.text == "Heart normal. No acute disease." and r.image_ids == ("A",)
    assert c.labels().tolist() == [[1.0] + [0.0] * 9]


def test_split_ids(corpus):
    uids = corpus.uids
    a, b = split_ids(uids, seed=0), split_ids(uids, seed=0)
    assert a == b
    sets = [set(a[k]) for k in ("train", "val", "test")]
    assert sets[0].isdisjoint(sets[1]) and sets[0].isdisjoint(sets[2]) and sets[1].isdisjoint(sets[2])
    assert sum(map(len, sets)) == len(uids)
    assert abs(len(a["train"]) / len(uids) - 0.8) < 0.03
    # adding or removing reports never moves the others
    c = split_ids(uids[:1000] + ["NEW1", "NEW2"], seed=0)
    assert set(c["test"]) - {"NEW1", "NEW2"} == set(a["test"]) & set(uids[:1000])
    assert split_ids(uids, seed=1) != a
    with pytest.raises(ValueError, match="fractions"):
        split_ids(uids, 0, fractions=(0.5, 0.5, 0.5))
