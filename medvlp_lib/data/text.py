"""Zero-shot prompt templates: GLoRIA / MedCLIP-style severity x subtype x location word lists.

A finding's prompt set is the Cartesian product of three word lists, joined with spaces (empty words
dropped), e.g. ``"mild" x "cardiomegaly" x ""`` -> ``"mild cardiomegaly"`` and ``"small" x "pleural effusion" x
"on the right"`` -> ``"small pleural effusion on the right"``. The words follow the IU X-Ray report
vocabulary (the benchmark's texts), GLoRIA's CheXpert prompt lists (Huang et al., 2021) and MedCLIP's
(Wang et al., 2022). The ``normal`` class uses whole sentences typical of normal reports.

:func:`build_prompts` is deterministic: all prompts in a fixed order, or a seeded subset of ``n``.
"""
from __future__ import annotations

import itertools

import numpy as np

from ..utils import check_seed

__all__ = ["PROMPT_LABELS", "PROMPT_WORDS", "build_prompts", "all_prompts"]

PROMPT_LABELS: tuple[str, ...] = ("cardiomegaly", "pleural_effusion", "opacity", "atelectasis", "nodule",
                                  "emphysema", "edema", "pneumothorax", "device", "normal")
"""The labels that have prompt lists (the benchmark's ``LABELS``, same order)."""

_LEFT_RIGHT = ("", "on the right", "on the left", "bilateral")
_ZONES = ("", "in the right lower lobe", "in the left lower lobe", "in the right upper lobe",
          "in the left upper lobe", "at the lung bases", "in the right middle lobe")

PROMPT_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "cardiomegaly": {
        "severity": ("", "mild", "moderate", "severe", "borderline"),
        "subtype": ("cardiomegaly", "enlarged cardiac silhouette", "enlarged heart", "cardiac enlargement",
                    "increased heart size", "enlarged cardiomediastinal silhouette"),
        "location": ("",),
    },
    "pleural_effusion": {
        "severity": ("", "small", "moderate", "large", "trace"),
        "subtype": ("pleural effusion", "effusion", "pleural fluid", "blunting of the costophrenic angle"),
        "location": _LEFT_RIGHT,
    },
    "opacity": {
        "severity": ("", "patchy", "focal", "mild", "streaky"),
        "subtype": ("airspace opacity", "airspace disease", "consolidation", "infiltrate", "pneumonia", "opacity"),
        "location": _ZONES,
    },
    "atelectasis": {
        "severity": ("", "mild", "minimal", "subsegmental", "bibasilar"),
        "subtype": ("atelectasis", "linear atelectasis", "volume loss", "plate-like atelectasis", "scarring"),
        "location": ("", "at the lung bases", "in the left lower lobe", "in the right lower lobe",
                     "in the lingula"),
    },
    "nodule": {
        "severity": ("", "small", "calcified", "rounded"),
        "subtype": ("nodule", "pulmonary nodule", "granuloma", "mass", "nodular opacity"),
        "location": ("", "in the right upper lobe", "in the left upper lobe", "in the right lower lobe",
                     "in the left lower lobe", "in the right hilum"),
    },
    "emphysema": {
        "severity": ("", "mild", "severe", "chronic"),
        "subtype": ("emphysema", "hyperinflated lungs", "hyperexpanded lungs", "flattened hemidiaphragms",
                    "chronic obstructive pulmonary disease"),
        "location": ("",),
    },
    "edema": {
        "severity": ("", "mild", "moderate", "severe", "interstitial"),
        "subtype": ("pulmonary edema", "vascular congestion", "pulmonary vascular congestion", "edema",
                    "interstitial prominence"),
        "location": ("", "bilateral"),
    },
    "pneumothorax": {
        "severity": ("", "small", "large", "apical", "tension"),
        "subtype": ("pneumothorax", "collapsed lung", "pleural air"),
        "location": _LEFT_RIGHT,
    },
    "device": {
        "severity": ("", "stable", "well positioned"),
        "subtype": ("central venous catheter", "pacemaker", "sternotomy wires", "surgical clips",
                    "endotracheal tube", "port catheter", "surgical sutures", "stent"),
        "location": ("", "in the right chest", "in the left chest", "overlying the mediastinum"),
    },
    "normal": {
        "severity": ("",),
        "subtype": ("no acute cardiopulmonary abnormality", "the lungs are clear", "no active disease",
                    "normal chest", "heart size is normal and the lungs are clear",
                    "no focal consolidation pleural effusion or pneumothorax", "normal chest x-ray",
                    "no acute disease", "the cardiomediastinal silhouette is normal"),
        "location": ("",),
    },
}


def all_prompts(label: str) -> list[str]:
    """Every severity x subtype x location prompt of ``label`` in a fixed order (duplicates removed)."""
    if label not in PROMPT_WORDS:
        raise ValueError(f"unknown label {label!r}; prompts exist for {list(PROMPT_WORDS)}")
    w = PROMPT_WORDS[label]
    out = []
    for sev, sub, loc in itertools.product(w["severity"], w["subtype"], w["location"]):
        text = " ".join(x for x in (sev, sub, loc) if x)
        if text not in out:
            out.append(text)
    return out


def build_prompts(label: str, n: int | None = None, seed: int = 0) -> list[str]:
    """Prompts for ``label``: all of them (``n=None`` or ``n >= total``) or a seeded subset of ``n``.

    The subset is drawn without replacement with ``numpy.random.default_rng(seed)`` and returned in the
    fixed order of :func:`all_prompts`, so the same ``(label, n, seed)`` always gives the same list.
    """
    seed = check_seed(seed)
    prompts = all_prompts(label)
    if n is None or n >= len(prompts):
        if n is not None and (not isinstance(n, (int, np.integer)) or n < 1):
            raise ValueError(f"n must be a positive integer or None, got {n!r}")
        return prompts
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer or None, got {n!r}")
    idx = np.sort(np.random.default_rng(seed).choice(len(prompts), size=int(n), replace=False))
    return [prompts[i] for i in idx]
