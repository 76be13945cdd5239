"""Data: IU X-Ray reports (real text), rendered chest films, datasets.

Public API: :data:`LABELS`, :func:`load_reports`, :class:`ReportCorpus`, :class:`Report`,
:func:`split_ids`, :func:`render` / :func:`render_batch`, :class:`CXRDataset`,
:class:`SiteShift` / :class:`Degradation` with presets :data:`SITE_PRESETS` ("external") and
:data:`DEGRADE_PRESETS` ("phone").
"""
from __future__ import annotations

from .cxr import CXRDataset
from .render import (DEGRADE_PRESETS, MASK_NAMES, SITE_PRESETS, Degradation, Rendered, SiteShift,
                     bits_to_masks, render, render_batch)
from .reports import (LABELS, MeshFinding, Report, ReportCorpus, load_reports, parse_mesh_term,
                      split_ids)

EXTERNAL_SITE = SITE_PRESETS["external"]
PHONE_CAPTURE = DEGRADE_PRESETS["phone"]

__all__ = [
    "LABELS", "load_reports", "ReportCorpus", "Report", "MeshFinding", "parse_mesh_term", "split_ids",
    "render", "render_batch", "Rendered", "bits_to_masks", "MASK_NAMES", "CXRDataset", "SiteShift",
    "Degradation", "SITE_PRESETS", "DEGRADE_PRESETS", "EXTERNAL_SITE", "PHONE_CAPTURE",
]
