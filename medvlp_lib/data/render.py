"""Deterministic chest-radiograph renderer conditioned on a report's parsed MeSH findings.

Picture model
-------------
Images are frontal (PA) films in radiographic convention: **the patient's right is on the image
left**, bright = dense (bone, heart, fluid), dark = air (lungs, outside the body). Everything is
composed in an *attenuation* space ``A`` (sum of layers) and tone-mapped as ``I = 1 - exp(-k A)``
followed by a gamma, exposure and quantum noise:

* anatomy (per size, pre-rendered once into a cached bank of 12 body variants x 3 inspiration levels
  x 4 heart sizes): body soft tissue with shoulders and humeral heads, two lung fields (apices,
  costophrenic angles, cardiac notch), diaphragm domes (right higher) with liver and a gastric
  bubble below, mediastinum with trachea and aortic knob, heart shadow, spine with vertebral
  bodies, posterior and faint anterior ribs, clavicles, vessel markings radiating from the hila;
* per image: a patient affine (rotation, scale, shift), exposure, gamma, noise and the findings.

Findings (``MeSH name`` -> picture; ``side`` is the patient's side, severity mild/moderate/severe,
small/large, borderline scales each effect)
* cardiomegaly / ``Cardiac Shadow/enlarged``: heart 1.12x / 1.24x / 1.36x wider;
* pleural effusion / ``Costophrenic Angle/blunted``: homogeneous fluid density in the lung base with
  a meniscus rising laterally, blunting the costophrenic angle and hiding the dome (side, height);
* opacity / airspace disease / consolidation / infiltrate / pneumonia / density: patchy fluffy
  density (several textured blobs) in the stated lobe/zone (upper/apex, middle/lingula/hilum,
  lower/base/retrocardiac) and side;
* atelectasis / volume loss (and ``Cicatrix`` scars, not in a mask): plate-like linear bands in the
  stated zone; severe adds a small wedge of density;
* nodule / mass / granuloma / calcified granuloma / calcinosis: round foci (nodule soft r~2.5% of
  the film, mass r~7%, calcified = small and very bright; ``multiple`` -> 3-5 foci; ``hilum`` /
  ``lymph nodes`` -> at the hilum);
* pneumothorax: the lung retracts towards the hilum; the rim between chest wall and visceral
  pleura is dark and has no lung markings, bounded by a thin bright pleural line (side, size);
* emphysema / COPD / hyperdistention / hyperlucent lung / flattened diaphragm: bank variant with
  low flattened domes, bigger and darker lungs with sparser markings; ``Lung/hypoinflation`` uses
  the high-dome variant; ``Diaphragm/<side>/elevated`` raises one dome;
* edema / congestion: bilateral perihilar haze (bat-wing) and Kerley B lines at the bases;
* devices: indwelling catheter (line from the stated subclavian region to the SVC/right atrium),
  implanted device (pacemaker box in the upper chest with a lead to the heart), surgical
  instruments / sutures (sternotomy wire loops; surgical clips below the diaphragm when the term says
  ``abdomen``), tube (midline tube), stent (meshed tube).

Masks (``Rendered.masks``; bool ``[H, W]`` for each name in :data:`MASK_NAMES`): pleural effusion,
pneumothorax (the airless rim), opacity, atelectasis, nodule. They are warped with the image.

Knobs
-----
:class:`SiteShift` (another hospital's scanner: exposure, contrast, gamma, noise, resolution) and
:class:`Degradation` (low-quality capture: blur, JPEG re-compression via PIL, perspective warp,
glare); presets :data:`SITE_PRESETS` (``"external"``) and :data:`DEGRADE_PRESETS` (``"phone"``).

Determinism
-----------
Every random choice comes from ``numpy.random.default_rng`` seeded with SHA-256 of
``(seed, key)``, where ``key`` is the report uid (or the sorted MeSH terms), never Python's
``hash()``. The patient (body, pose, exposure, noise) and the findings use two separate streams,
so ``render(terms_a, seed, key="p1")`` and ``render(terms_b, seed, key="p1")`` show the *same
patient* with different findings (counterfactual pairs). The same (seed, uid/findings, size, site, degrade) gives identical bytes; images of
a batch do not depend on the other images of the batch.

What the renderer cannot model (limitations)
--------------------------------------------
No lateral view, no 3-D projection physics (scatter, beam hardening, grid lines), no real
texture statistics of lung parenchyma; anatomy comes from 12 parametric bodies (no children,
no breast shadows, no skeletal deformity, scoliosis, fractures, spinal hardware); findings are
idealised textbook shapes with fixed appearance families: no silhouette signs, air bronchograms,
cavities, hilar adenopathy masses, pleural thickening, fibrosis/interstitial patterns,
hiatal hernia, tortuous aorta, old rib fractures or the long tail of rarer MeSH terms (ignored in a
:class:`Report`; a term passed directly must be a known finding name, else ``ValueError`` with close matches,
so a typo such as ``Cardiomegally`` cannot render a normal film).
Negations and uncertainty in the text are not read: the picture follows the MeSH tags only, so
report text and image can disagree exactly where the IU annotators' tags disagree with the text.
Severity is mapped to 3 discrete levels; location words beyond side and three zones are ignored.
"""
from __future__ import annotations

import difflib
import functools
import hashlib
import io
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..utils import check_seed
from .reports import (MeshFinding, Report, SEVERITIES, is_known_finding, known_finding_names, map_finding,
                      parse_mesh_term)

__all__ = [
    "MASK_NAMES", "SiteShift", "Degradation", "SITE_PRESETS", "DEGRADE_PRESETS", "Rendered",
    "render", "render_batch", "findings_key", "MIN_SIZE", "MAX_SIZE", "check_size", "resolve_preset", "anatomy_bank",
]

MIN_SIZE, MAX_SIZE = 64, 256
MASK_NAMES: tuple[str, ...] = ("pleural_effusion", "pneumothorax", "opacity", "atelectasis", "nodule")
_BIT = {n: 1 << i for i, n in enumerate(MASK_NAMES)}
N_BODIES = 12
_HEART_SCALES = (1.0, 1.12, 1.24, 1.36)
_INFL = ("hypo", "normal", "hyper")


# --------------------------------------------------------------------------- knobs
@dataclass(frozen=True)
class SiteShift:
    """Acquisition shift of another site, applied after tone mapping.

    exposure: multiplies the attenuation gain (<1 = under-exposed, greyer lungs);
    contrast: scales intensities around the image mean (<1 = flatter); gamma: ``I ** gamma``;
    noise: std of extra Gaussian noise (intensity units); resolution: fraction of the pixel grid
    actually resolved (image is area-downsampled to ``resolution * size`` and upsampled back);
    offset: added brightness (film fog).
    """
    exposure: float = 1.0
    contrast: float = 1.0
    gamma: float = 1.0
    noise: float = 0.0
    resolution: float = 1.0
    offset: float = 0.0

    def __post_init__(self):
        if not (0.1 <= self.resolution <= 1.0):
            raise ValueError(f"SiteShift.resolution must be in [0.1, 1], got {self.resolution}")
        if self.exposure <= 0 or self.gamma <= 0 or self.contrast <= 0 or self.noise < 0:
            raise ValueError(f"SiteShift needs exposure, gamma, contrast > 0 and noise >= 0, got {self}")


@dataclass(frozen=True)
class Degradation:
    """Low-quality capture (a phone photo of a film / a re-encoded screenshot).

    blur: Gaussian blur sigma in pixels at 128 px (scaled with size); jpeg_quality: PIL JPEG
    re-compression quality 1..95 or ``None``; perspective: maximum corner displacement as a
    fraction of the image side (random per image, keystone effect, black outside the film);
    glare: peak added brightness of a soft elliptical reflection at a random position.
    """
    blur: float = 0.0
    jpeg_quality: int | None = None
    perspective: float = 0.0
    glare: float = 0.0

    def __post_init__(self):
        if self.jpeg_quality is not None and not (1 <= int(self.jpeg_quality) <= 95):
            raise ValueError(f"Degradation.jpeg_quality must be in 1..95 or None, got {self.jpeg_quality}")
        if self.blur < 0 or self.glare < 0 or not (0 <= self.perspective < 0.3):
            raise ValueError(f"Degradation needs blur >= 0, glare >= 0, 0 <= perspective < 0.3, got {self}")


SITE_PRESETS: dict[str, SiteShift] = {
    "external": SiteShift(exposure=0.8, contrast=0.8, gamma=1.35, noise=0.03, resolution=0.6, offset=0.04),
}
DEGRADE_PRESETS: dict[str, Degradation] = {
    "phone": Degradation(blur=1.0, jpeg_quality=30, perspective=0.08, glare=0.35),
}


def resolve_preset(obj, presets, cls, argname):
    """``obj`` if it is None or a ``cls``, else the preset named ``obj`` (``ValueError`` / ``TypeError`` naming
    ``argname`` otherwise)."""
    if obj is None or isinstance(obj, cls):
        return obj
    if isinstance(obj, str):
        if obj not in presets:
            raise ValueError(f"unknown {argname} preset {obj!r}; allowed: {sorted(presets)} or a {cls.__name__}")
        return presets[obj]
    raise TypeError(f"{argname} must be None, a preset name {sorted(presets)} or a {cls.__name__}, got {type(obj).__name__}")


# --------------------------------------------------------------------------- helpers
def check_size(size) -> int:
    """``size`` as an int in [:data:`MIN_SIZE`, :data:`MAX_SIZE`] pixels, else a ``TypeError`` / ``ValueError``."""
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool):
        raise TypeError(f"size must be an int in [{MIN_SIZE}, {MAX_SIZE}], got {size!r}")
    if not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise ValueError(f"size must be in [{MIN_SIZE}, {MAX_SIZE}] pixels, got {size}")
    return int(size)


def _rng(*parts) -> np.random.Generator:
    h = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:16], "little"))


def _sstep(d, w):
    """Soft step 0->1 over width ``w`` around ``d = 0`` (cheap clipped ramp)."""
    return np.clip(d / w + 0.5, 0.0, 1.0)


@functools.lru_cache(maxsize=8)
def _grid(size: int):
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    Y, X = np.meshgrid(c, c, indexing="ij")
    return X, Y


def _px(v: float, size: int) -> int:
    return int(np.clip(round((v + 1) / 2 * size - 0.5), 0, size - 1))


def _box(size: int, x0: float, x1: float, y0: float, y1: float):
    c0, c1 = _px(min(x0, x1), size), _px(max(x0, x1), size) + 1
    r0, r1 = _px(min(y0, y1), size), _px(max(y0, y1), size) + 1
    return slice(r0, r1), slice(c0, c1)


# --------------------------------------------------------------------------- anatomy bank
def _body_params(k: int) -> dict:
    r = _rng("body", k)
    return dict(
        bw=float(r.uniform(0.74, 0.85)),            # body half width
        cx=float(r.uniform(-0.035, 0.035)),         # spine offset (rotation proxy)
        lx=float(r.uniform(0.62, 0.70)),            # lung lateral half width
        apex=float(r.uniform(-0.80, -0.72)),        # lung apex height
        yd=float(r.uniform(-0.03, 0.03)),           # diaphragm jitter
        hx=float(r.uniform(0.08, 0.12)), hy=float(r.uniform(-0.25, -0.2)),
        rx=float(r.uniform(0.33, 0.37)), ry=float(r.uniform(0.25, 0.29)),
        soft=float(r.uniform(0.75, 1.0)),           # soft tissue thickness
        rib_dy=float(r.uniform(0.125, 0.145)), rib_y0=float(r.uniform(-0.98, -0.9)),
        clav=float(r.uniform(-0.66, -0.58)),
        vessel_seed=k,
    )


def _lung_geom(p: dict, infl: int, heart: int, sides_elev=(0.0, 0.0)) -> dict:
    yd = {0: 0.30, 1: 0.44, 2: 0.62}[infl] + p["yd"]
    curv = {0: 1.0, 1: 0.9, 2: 0.35}[infl]
    s = _HEART_SCALES[heart]
    return dict(yd_r=yd - 0.05 - sides_elev[0], yd_l=yd + 0.02 - sides_elev[1], curv=curv,
                lx=p["lx"] * (1.05 if infl == 2 else 0.96 if infl == 0 else 1.0),
                apex=p["apex"] - (0.04 if infl == 2 else 0.0),
                rx=p["rx"] * s, ry=p["ry"] * (1 + 0.35 * (s - 1)), hx=p["hx"] + 0.55 * p["rx"] * (s - 1),
                hy=yd + p["hy"])


def _dome(X, g, side_sign):
    """Diaphragm height (Y) per column for side (-1 = image left = patient right)."""
    yd = g["yd_r"] if side_sign < 0 else g["yd_l"]
    u = np.abs(X)
    return yd + g["curv"] * (u - 0.3) ** 2 + 0.6 * np.clip(u - 0.55, 0, None) ** 2


def _heart_field(X, Y, p, g):
    """Cardiac silhouette: a tilted left-ventricular ellipse plus a smaller right-atrial one."""
    c, s = np.cos(0.45), np.sin(0.45)
    dx, dy = X - g["hx"] - 0.04 * g["rx"] / 0.35, Y - g["hy"] - 0.02
    a, b = c * dx + s * dy, -s * dx + c * dy
    e = (a / g["rx"]) ** 2 + (b / g["ry"]) ** 2
    ra = ((X - g["hx"] + 0.55 * g["rx"]) / (0.45 * g["rx"])) ** 2 + ((Y - g["hy"] + 0.02) / (0.8 * g["ry"])) ** 2
    e = np.minimum(e, ra)
    return np.clip(1.7 * np.sqrt(np.clip(1.0 - e, 0, 1)), 0, 1)


def _lung_field(X, Y, p, g):
    u = np.abs(X - p["cx"] * 0.3)
    lx = g["lx"] * (1 - 0.4 * np.clip((0.35 - Y) / 1.25, 0, 1) ** 2)
    cap = Y - (g["apex"] + 2.2 * (u - 0.3) ** 2)                   # >0 below the rounded apex
    lat = lx - u                                                     # >0 inside lateral wall
    medial = u - 0.10 - 0.03 * np.clip(Y + 0.2, 0, 1)               # >0 outside mediastinum
    dome = np.where(X < 0, _dome(X, g, -1), _dome(X, g, 1)) - Y       # >0 above diaphragm
    d = np.minimum(np.minimum(np.minimum(lat, medial), dome), cap)
    lung = _sstep(d, 0.03)
    heart = _heart_field(X, Y, p, g)
    knob = np.clip((1 - ((X - 0.1) ** 2 + (Y + 0.36) ** 2) / 0.085 ** 2) / 0.3, 0, 1)
    return lung * (1 - np.maximum(heart, knob)), heart, knob


def _vessels(X, Y, p, g, lung):
    r = _rng("vessels", p["vessel_seed"])
    out = np.zeros_like(X)
    for side in (-1, 1):
        hxp, hyp = side * 0.2, -0.02
        dx, dy = X - hxp, Y - hyp
        rad = np.sqrt(dx * dx + dy * dy) + 1e-6
        th = np.arctan2(dy, dx * side)                      # 0 = lateral, +pi/2 = down
        out = np.maximum(out, 0.9 * np.exp(-(rad / 0.09) ** 2))   # hilar vessels
        for _ in range(40):
            t0 = r.uniform(-1.7, 1.7)
            r0 = r.uniform(0.02, 0.3)
            r1 = r0 + r.uniform(0.12, 0.4)
            bend = r.uniform(-1.2, 1.2)
            w0 = r.uniform(0.008, 0.014) * (1.3 - r0)
            ang = t0 + bend * (rad - r0)
            perp = rad * np.sin(th - ang)
            along = rad * np.cos(th - ang)
            w = w0 * np.clip(1.2 - 0.9 * rad, 0.3, 1)
            ridge = np.exp(-(perp / w) ** 2) * (along > 0) * _sstep(rad - r0, 0.04) * _sstep(r1 - rad, 0.12)
            out = np.maximum(out, ridge * np.clip(1.1 - rad, 0.15, 1))
    return out * lung


def _anatomy(size: int, p: dict, infl: int, heart: int):
    X, Y = _grid(size)
    g = _lung_geom(p, infl, heart)
    bw, cx = p["bw"], p["cx"]
    u = np.abs(X - cx * 0.3)
    # body outline: chest wall widening to the shoulders, neck at the top
    width = bw + 0.12 * np.clip((-0.5 - Y) / 0.3, 0, 1) - 0.05 * np.clip((Y - 0.6) / 0.4, 0, 1)
    body = _sstep(width - u, 0.05)
    A = p["soft"] * body * (0.32 + 0.26 * np.sqrt(np.clip(1 - (u / width) ** 2, 0, 1)))
    # humeral heads and the axillary soft tissue in the upper corners
    for s in (-1, 1):
        A += 0.1 * _sstep(0.16 - np.sqrt((X - s * (bw + 0.12)) ** 2 + (Y + 0.85) ** 2), 0.08)
    A += 0.12 * _sstep(-0.6 - Y, 0.2) * body
    A += 0.05 * np.clip((Y + 0.1) / 0.6, 0, 1) * body * (1 - _sstep(u - bw + 0.1, 0.1))  # breast / pectoral soft tissue
    lung, heartf, knob = _lung_field(X, Y, p, g)
    # abdomen below the diaphragm (liver on image left; stomach with gas bubble on image right)
    below = _sstep(Y - np.where(X < 0, _dome(X, g, -1), _dome(X, g, 1)), 0.03) * body
    A += 0.38 * below
    bubble = _sstep(0.08 - np.sqrt(((X - 0.4) / 1.5) ** 2 + (Y - g["yd_l"] - 0.13) ** 2), 0.03)
    A -= 0.3 * bubble * below
    # mediastinum, heart, aortic knob
    med = _sstep(0.11 + 0.03 * np.clip(Y + 0.2, 0, 1) - np.abs(X - 0.01), 0.04) * _sstep(Y + 0.9, 0.1)
    A += 0.32 * np.maximum(0.8 * med, np.maximum(heartf, 0.8 * knob)) * (1 - 0.7 * below)
    # trachea
    A -= 0.14 * _sstep(0.03 - np.abs(X - 0.0 - 0.02 * (Y + 1)), 0.02) * _sstep(-0.3 - Y, 0.06)
    # spine with vertebral bodies and disc spaces
    sp = _sstep(0.065 - np.abs(X - cx), 0.025)
    vert = 0.7 + 0.3 * np.cos((Y + 1) * np.pi / 0.085) ** 2
    A += 0.08 * sp * vert * (1 - 0.5 * below)
    A += 0.06 * _sstep(0.018 - np.abs(np.abs(X - cx) - 0.05), 0.012) * (vert > 0.9)  # pedicle edges
    # posterior ribs: arcs from the spine bending down laterally
    ur = np.abs(X - cx)
    q = (Y - (-0.1 * ur + 0.55 * ur ** 2) - p["rib_y0"]) / p["rib_dy"]
    fr = q - np.floor(q)
    rib = np.exp(-((fr - 0.2) / 0.11) ** 2) + 0.7 * np.exp(-((fr - 0.07) / 0.03) ** 2) \
        + 0.7 * np.exp(-((fr - 0.33) / 0.03) ** 2)
    rib *= (q > 0.3) * (q < 10.5) * _sstep(bw - 0.03 - ur, 0.04) * _sstep(ur - 0.07, 0.04)
    A += 0.07 * rib
    # anterior ribs (fainter, sloping down medially)
    qa = (Y + 0.45 * ur - p["rib_y0"] - 0.25) / (p["rib_dy"] * 1.2)
    fa = qa - np.floor(qa)
    A += 0.035 * np.exp(-((fa - 0.2) / 0.1) ** 2) * (qa > 0.3) * (qa < 6) * _sstep(ur - 0.15, 0.05) * _sstep(0.75 - ur, 0.1)
    # clavicles
    uc = np.clip(ur, 0.05, 0.75)
    yc = p["clav"] - 0.2 * (uc - 0.06) + 0.06 * np.sin((uc - 0.06) * 4.5)
    clav = _sstep(0.03 - np.abs(Y - yc), 0.02) * _sstep(ur - 0.06, 0.03) * _sstep(0.72 - ur, 0.05)
    A += 0.16 * clav
    # lungs: air removes attenuation; markings and parenchymal texture add a little back
    air = {0: 0.30, 1: 0.34, 2: 0.40}[infl]
    ves = _vessels(X, Y, p, g, lung) * (0.6 if infl == 2 else 1.0)
    A -= air * lung
    _, smooth = _noise_tiles(size)
    mark = (0.075 * ves + 0.012 * smooth[:size, :size] * lung) * (1.0 + 0.5 * np.clip(Y, 0, 1))
    A += mark
    return A.astype(np.float32), lung.astype(np.float16), mark.astype(np.float16), g


@functools.lru_cache(maxsize=4)
def anatomy_bank(size: int):
    """Pre-rendered anatomy for one size: A, lung field and markings [bodies, infl, heart, H, W]."""
    shape = (N_BODIES, 3, 4, size, size)
    A = np.empty(shape, np.float32)
    lung = np.empty(shape, np.float16)
    mark = np.empty(shape, np.float16)
    params, geoms = [], {}
    for k in range(N_BODIES):
        p = _body_params(k)
        params.append(p)
        for i in range(3):
            for h in range(4):
                A[k, i, h], lung[k, i, h], mark[k, i, h], geoms[k, i, h] = _anatomy(size, p, i, h)
    return A, lung, mark, params, geoms


@functools.lru_cache(maxsize=8)
def _noise_tiles(size: int):
    r = _rng("noise", size)
    white = r.standard_normal((2 * size, 2 * size)).astype(np.float32)
    t = torch.from_numpy(r.standard_normal((1, 1, 2 * size, 2 * size)).astype(np.float32))
    k = max(1, size // 40)
    for _ in range(2):
        t = F.avg_pool2d(F.pad(t, (k, k, k, k), mode="circular"), 2 * k + 1, stride=1)
    smooth = t[0, 0].numpy()
    smooth = (smooth - smooth.mean()) / (smooth.std() + 1e-6)
    return white, smooth.astype(np.float32)


# --------------------------------------------------------------------------- findings -> spec
def _check_known(f: MeshFinding) -> MeshFinding:
    if not is_known_finding(f):
        close = difflib.get_close_matches(f.name.strip().lower(), known_finding_names(), n=3, cutoff=0.6)
        hint = f"did you mean {' / '.join(repr(c) for c in close)}? " if close else ""
        raise ValueError(f"unknown finding {f.name!r} in MeSH term {f.raw or f.name!r}: the renderer would draw "
                         f"nothing for it. {hint}Known names: medvlp_lib.data.reports.known_finding_names() "
                         f"(case-insensitive, e.g. 'Cardiomegaly/mild', 'Pleural Effusion/right')")
    return f


def _as_findings(findings) -> tuple[tuple[MeshFinding, ...], str]:
    """Normalise input to parsed findings and a stable key (uid if a Report).

    Terms given directly (strings / :class:`MeshFinding`) must name a known finding
    (:func:`~medvlp_lib.data.reports.is_known_finding`), else ``ValueError`` with close matches: a typo such as
    ``"Cardiomegally"`` would otherwise render a normal film. A :class:`Report`'s own unknown terms (real IU
    annotations, counted in ``corpus.unknown_terms``) are drawn as nothing, as documented in the module."""
    if isinstance(findings, Report):
        return tuple(findings.findings_parsed), findings.uid
    if isinstance(findings, (str, MeshFinding)):
        findings = [findings]
    try:
        items = list(findings)
    except TypeError:
        raise TypeError(f"findings must be a Report, a MeSH term string, a MeshFinding or a sequence of them, "
                        f"got {type(findings).__name__}") from None
    out = []
    for f in items:
        if isinstance(f, MeshFinding):
            out.append(_check_known(f))
        elif isinstance(f, str):
            out.append(_check_known(parse_mesh_term(f)))
        else:
            raise TypeError(f"findings items must be MeSH term strings or MeshFinding, got {type(f).__name__}")
    return tuple(out), findings_key(out)


def findings_key(findings: Iterable[MeshFinding]) -> str:
    """Stable text key of a finding list (sorted raw terms) used to seed the renderer."""
    return "mesh:" + "|".join(sorted((f.raw or f.name) for f in findings))


def _sev(f: MeshFinding, default: float, r) -> float:
    if f.severity is not None:
        return SEVERITIES[f.severity]
    return float(default + r.uniform(-0.3, 0.3))


def _sides(f: MeshFinding, r, default: str = "random") -> list[int]:
    """Image-side signs: patient right -> -1 (image left), left -> +1."""
    s = f.side
    if s == "bilateral":
        return [-1, 1]
    if s == "right":
        return [-1]
    if s == "left":
        return [1]
    if default == "bilateral":
        return [-1, 1]
    return [int(r.choice([-1, 1]))]


def _zone(f: MeshFinding, r) -> str:
    loc = f.locations
    if loc & {"upper lobe", "apex"}:
        return "upper"
    if loc & {"middle lobe", "lingula", "hilum", "perihilar"}:
        return "middle"
    if loc & {"lower lobe", "base", "retrocardiac", "costophrenic angle"}:
        return "lower"
    return str(r.choice(["upper", "middle", "lower", "lower"]))


def _plan(findings: Sequence[MeshFinding], r) -> dict:
    plan = dict(infl=1, heart=0, elev=[0.0, 0.0], ops=[])
    for f in findings:
        name = f.name.strip().lower()
        quals = set(f.locations) | set(f.modifiers) | ({f.severity} if f.severity else set())
        labels = map_finding(f.name, quals)
        if "cardiomegaly" in labels:
            sv = _sev(f, 1.7, r)
            plan["heart"] = max(plan["heart"], int(np.clip(round(sv), 1, 3)))
        if "emphysema" in labels:
            plan["infl"] = 2
        if name == "lung" and "hypoinflation" in quals and plan["infl"] != 2:
            plan["infl"] = 0
        if name == "diaphragm" and "elevated" in quals:
            for s in _sides(f, r):
                plan["elev"][0 if s < 0 else 1] = 0.1 * (SEVERITIES.get(f.severity, 1.5) if f.severity else 1.5)
        for lab in labels:
            if lab in ("pleural_effusion", "opacity", "atelectasis", "nodule", "pneumothorax", "edema", "device"):
                plan["ops"].append((lab, f))
        if name == "cicatrix":
            plan["ops"].append(("scar", f))
    return plan


# --------------------------------------------------------------------------- finding painters
def _lat_edge(g, Y, side):
    return g["lx"] + 0.06 * np.clip(Y + 0.5, 0, 1)


def _paint_effusion(A, bits, lung, g, f, r, size, X, Y):
    sv = _sev(f, 1.4, r)
    for s in _sides(f, r, default="bilateral"):
        yd = g["yd_r"] if s < 0 else g["yd_l"]
        h = 0.06 + 0.09 * sv + r.uniform(-0.02, 0.02)
        sl = _box(size, s * 0.05, s * 1.0, yd - h - 0.35, 1.0)
        Xs, Ys, Ls = X[sl], Y[sl], lung[sl]
        side_m = (Xs * s) > 0
        ul = np.clip(np.abs(Xs) / g["lx"], 0, 1.2)
        level = yd + 0.12 - h - 0.22 * (0.4 + 0.15 * sv) * ul ** 2          # meniscus rising laterally
        fluid = _sstep(Ys - level, 0.03) * side_m
        dens = fluid * (0.6 + 0.25 * np.clip((Ys - level) / 0.2, 0, 1))
        dens *= _sstep(g["lx"] + 0.06 - np.abs(Xs), 0.05)
        A[sl] += dens * (0.06 + 0.42 * Ls)
        bits[sl] |= np.where((fluid > 0.5) & (Ls > 0.25), _BIT["pleural_effusion"], 0).astype(np.uint8)


def _paint_pneumothorax(A, bits, lung, mark, g, f, r, size, X, Y):
    sv = _sev(f, 1.3, r)
    for s in _sides(f, r):
        frac = 0.05 + 0.08 * sv + r.uniform(-0.02, 0.02)
        hx, hy = s * 0.1, (g["yd_r"] if s < 0 else g["yd_l"]) - 0.05   # lung retracts down and medially
        sl = _box(size, s * 0.02, s * 1.0, -1.0, 0.9)
        Xs, Ys, Ls, Ms = X[sl], Y[sl], lung[sl].astype(np.float32), mark[sl].astype(np.float32)
        # shrunk lung: sample the lung field at coordinates pushed away from the hilum
        xs = hx + (Xs - hx) / (1 - frac)
        ys = hy + (Ys - hy) / (1 - frac * 0.6)
        ci = np.clip(np.round((xs + 1) / 2 * size - 0.5).astype(np.int32), 0, size - 1)
        ri = np.clip(np.round((ys + 1) / 2 * size - 0.5).astype(np.int32), 0, size - 1)
        shr = lung[ri, ci].astype(np.float32) * ((Xs * s) > 0)
        rim = np.clip(Ls - shr, 0, 1) * ((Xs * s) > 0)
        A[sl] -= rim * (Ms + 0.06)
        inner = shr > 0.5
        edge = inner & ~(np.roll(inner, 1, 0) & np.roll(inner, -1, 0) & np.roll(inner, 1, 1) & np.roll(inner, -1, 1))
        A[sl] += 0.22 * edge * (Ls > 0.5) + 0.04 * shr
        bits[sl] |= np.where(rim > 0.5, _BIT["pneumothorax"], 0).astype(np.uint8)


def _zone_center(g, zone, s, r):
    yd = g["yd_r"] if s < 0 else g["yd_l"]
    x = s * r.uniform(0.3, 0.48)
    y = {"upper": r.uniform(-0.6, -0.42), "middle": r.uniform(-0.2, 0.0),
         "lower": yd - r.uniform(0.08, 0.2)}[zone]
    return x, y


def _paint_opacity(A, bits, lung, smooth, g, f, r, size, X, Y):
    sv = _sev(f, 1.5, r)
    for s in _sides(f, r):
        zone = _zone(f, r)
        cx0, cy0 = _zone_center(g, zone, s, r)
        rad = 0.12 + 0.05 * sv
        sl = _box(size, cx0 - 2 * rad, cx0 + 2 * rad, cy0 - 1.8 * rad, cy0 + 1.8 * rad)
        Xs, Ys = X[sl], Y[sl]
        d = np.zeros_like(Xs)
        for _ in range(int(r.integers(3, 6))):
            bx, by = cx0 + r.normal(0, rad * 0.5), cy0 + r.normal(0, rad * 0.4)
            br = rad * r.uniform(0.45, 0.8)
            d = np.maximum(d, np.exp(-(((Xs - bx) ** 2 + (Ys - by) ** 2) / br ** 2)))
        oy, ox = r.integers(0, size, 2)
        tex = smooth[oy:oy + d.shape[0], ox:ox + d.shape[1]]
        dens = np.clip(d * (1.0 + 0.45 * tex) - 0.25, 0, None) * lung[sl]
        A[sl] += (0.45 + 0.1 * sv) * dens
        bits[sl] |= np.where(dens > 0.18, _BIT["opacity"], 0).astype(np.uint8)


def _line(Xs, Ys, x0, y0, x1, y1):
    vx, vy = x1 - x0, y1 - y0
    L2 = vx * vx + vy * vy + 1e-9
    t = np.clip(((Xs - x0) * vx + (Ys - y0) * vy) / L2, 0, 1)
    return np.sqrt((Xs - x0 - t * vx) ** 2 + (Ys - y0 - t * vy) ** 2)


def _paint_atelectasis(A, bits, lung, g, f, r, size, X, Y, scar=False):
    sv = _sev(f, 1.3, r)
    for s in _sides(f, r):
        zone = _zone(f, r) if (f.locations & {"upper lobe", "apex", "middle lobe", "lingula", "lower lobe", "base", "retrocardiac"}) else "lower"
        cx0, cy0 = _zone_center(g, zone, s, r)
        n = 1 + int(sv >= 2) + int(r.uniform() < 0.3)
        sl = _box(size, cx0 - 0.35, cx0 + 0.35, cy0 - 0.25, cy0 + 0.25)
        Xs, Ys = X[sl], Y[sl]
        dens = np.zeros_like(Xs)
        for j in range(n):
            L = 0.14 + 0.05 * sv + r.uniform(0, 0.06)
            ang = r.uniform(-0.35, 0.2) * s
            yy = cy0 + j * 0.07 + r.normal(0, 0.02)
            x0, y0 = cx0 - L * np.cos(ang), yy - L * np.sin(ang)
            x1, y1 = cx0 + L * np.cos(ang), yy + L * np.sin(ang)
            th = (0.014 + 0.007 * sv) * (0.6 if scar else 1.0)
            dens = np.maximum(dens, _sstep(th - _line(Xs, Ys, x0, y0, x1, y1), 0.012))
        if sv >= 3 and not scar:                                  # volume-loss wedge
            dens = np.maximum(dens, 0.7 * np.exp(-(((Xs - cx0) / 0.16) ** 2 + ((Ys - cy0 - 0.06) / 0.07) ** 2)))
        dens *= lung[sl]
        A[sl] += 0.42 * dens
        if not scar:
            bits[sl] |= np.where(dens > 0.4, _BIT["atelectasis"], 0).astype(np.uint8)


def _paint_nodule(A, bits, lung, g, f, r, size, X, Y):
    name = f.name.lower()
    calcified = "calc" in name or "calcified" in f.modifiers or "granuloma" in name
    mass = name == "mass" or (f.severity in ("large",))
    multiple = "multiple" in f.modifiers or "scattered" in f.modifiers
    n = int(r.integers(3, 6)) if multiple else 1
    hilar = bool(f.locations & {"hilum", "lymph nodes", "mediastinum", "paratracheal"})
    for _ in range(n):
        s = _sides(f, r)[0] if f.side != "bilateral" else int(r.choice([-1, 1]))
        if hilar:
            cx0, cy0 = s * r.uniform(0.17, 0.26), r.uniform(-0.2, 0.0)
        else:
            for _try in range(6):                              # keep parenchymal foci inside the lung
                cx0, cy0 = _zone_center(g, _zone(f, r), s, r)
                cx0 += r.uniform(-0.12, 0.12) * s
                if lung[_px(cy0, size), _px(cx0, size)] > 0.6:
                    break
        if mass:
            rad, amp = r.uniform(0.09, 0.14), 0.5
        elif calcified:
            rad, amp = r.uniform(0.018, 0.03), 1.1
        else:
            rad, amp = r.uniform(0.03, 0.05), 0.5
        sl = _box(size, cx0 - rad - 0.03, cx0 + rad + 0.03, cy0 - rad - 0.03, cy0 + rad + 0.03)
        dist = np.sqrt((X[sl] - cx0) ** 2 + (Y[sl] - cy0) ** 2)
        edge = 0.012 if calcified else max(0.02, rad * 0.3)
        disc = _sstep(rad - dist, edge)
        A[sl] += amp * disc
        bits[sl] |= np.where(disc > 0.5, _BIT["nodule"], 0).astype(np.uint8)


def _paint_edema(A, lung, g, f, r, size, X, Y):
    sv = _sev(f, 1.5, r)
    for s in (-1, 1):
        sl = _box(size, s * 0.05, s * 1.0, -0.8, 0.8)
        Xs, Ys = X[sl], Y[sl]
        haze = np.exp(-(((Xs - s * 0.24) / 0.3) ** 2 + ((Ys + 0.02) / 0.35) ** 2))
        A[sl] += (0.12 + 0.07 * sv) * haze * lung[sl]
        yd = g["yd_r"] if s < 0 else g["yd_l"]
        xe = s * (g["lx"] + 0.02)
        for j in range(int(2 + 2 * sv)):                        # Kerley B lines
            yy = yd - 0.03 - 0.035 * j + r.normal(0, 0.008)
            L = r.uniform(0.04, 0.08)
            sl2 = _box(size, xe - s * (L + 0.03), xe, yy - 0.02, yy + 0.02)
            d = np.abs(Y[sl2] - yy)
            A[sl2] += 0.22 * _sstep(0.008 - d, 0.008) * (np.abs(X[sl2]) > abs(xe) - L) * lung[sl2]


def _paint_device(A, g, f, r, size, X, Y):
    name = f.name.lower()
    s = _sides(f, r)[0] if f.side in ("right", "left") else (1 if "implanted" in name else -1)

    def poly(points, width, amp):
        pts = np.asarray(points, np.float32)
        sl = _box(size, pts[:, 0].min() - 0.03, pts[:, 0].max() + 0.03, pts[:, 1].min() - 0.03, pts[:, 1].max() + 0.03)
        Xs, Ys = X[sl], Y[sl]
        d = np.full(Xs.shape, 9.0, np.float32)
        for a, b in zip(pts[:-1], pts[1:]):
            d = np.minimum(d, _line(Xs, Ys, a[0], a[1], b[0], b[1]))
        A[sl] += amp * _sstep(width - d, max(0.006, 1.2 / size))

    def curve(p0, p1, p2, n=10):
        t = np.linspace(0, 1, n)[:, None]
        return (1 - t) ** 2 * np.asarray(p0) + 2 * (1 - t) * t * np.asarray(p1) + t ** 2 * np.asarray(p2)

    w = max(0.008, 1.5 / size)
    if "catheter" in name or name == "medical device":
        p0 = (s * r.uniform(0.45, 0.6), r.uniform(-0.72, -0.62))
        poly(curve(p0, (s * 0.15, -0.62), (-0.06, r.uniform(-0.1, 0.05))), w, 0.55)
    elif "implanted" in name:
        bx, by = s * r.uniform(0.45, 0.6), r.uniform(-0.62, -0.5)
        sl = _box(size, bx - 0.11, bx + 0.11, by - 0.08, by + 0.08)
        box = _sstep(0.085 - np.abs(X[sl] - bx), 0.02) * _sstep(0.06 - np.abs(Y[sl] - by), 0.02)
        A[sl] += 1.3 * box
        poly(curve((bx - s * 0.05, by), (s * 0.05, -0.45), (0.12, g["hy"] + 0.1)), w, 0.7)
    elif "tube" in name:
        poly([(0.01, -1.0), (0.02, -0.4), (0.05, 0.1)], w * 1.4, 0.45)
    elif "stent" in name:
        cx0, cy0 = r.uniform(-0.1, 0.2), r.uniform(-0.1, 0.25)
        for k in range(4):
            poly([(cx0 - 0.04, cy0 + 0.03 * k), (cx0 + 0.04, cy0 + 0.03 * k + 0.02)], w * 0.7, 0.6)
        poly([(cx0 - 0.04, cy0), (cx0 - 0.04, cy0 + 0.11)], w * 0.7, 0.6)
        poly([(cx0 + 0.04, cy0 + 0.02), (cx0 + 0.04, cy0 + 0.13)], w * 0.7, 0.6)
    elif "abdomen" in f.locations:                               # surgical clips below the diaphragm
        yd = g["yd_r"] if s < 0 else g["yd_l"]
        cx0, cy0 = s * r.uniform(0.2, 0.45), yd + r.uniform(0.2, 0.3)
        for _ in range(int(r.integers(2, 5))):
            x0, y0 = cx0 + r.normal(0, 0.05), cy0 + r.normal(0, 0.04)
            ang = r.uniform(0, np.pi)
            poly([(x0, y0), (x0 + 0.035 * np.cos(ang), y0 + 0.035 * np.sin(ang))], w, 0.9)
    else:                                                        # sternotomy wires / sutures / clips
        for k in range(5):
            cy0 = -0.38 + 0.13 * k
            sl = _box(size, -0.06, 0.08, cy0 - 0.04, cy0 + 0.04)
            rr = np.sqrt(((X[sl] - 0.01) / 0.045) ** 2 + ((Y[sl] - cy0) / 0.025) ** 2)
            A[sl] += 0.9 * _sstep(0.25 - np.abs(rr - 1.0), 0.15)


# --------------------------------------------------------------------------- main entry points
@dataclass
class Rendered:
    """A rendered film: ``image`` float32 [H, W] in [0, 1]; ``masks`` name -> bool [H, W]."""
    image: np.ndarray
    masks: dict[str, np.ndarray]
    findings: tuple[MeshFinding, ...] = ()
    key: str = ""
    seed: int = 0

    @property
    def mask(self) -> np.ndarray:
        """Union of all localised-finding masks."""
        out = np.zeros(self.image.shape, bool)
        for m in self.masks.values():
            out |= m
        return out


def bits_to_masks(bits: np.ndarray) -> dict[str, np.ndarray]:
    """Unpack the uint8 bit field returned by :func:`render_batch` into name -> bool arrays."""
    return {n: (bits & _BIT[n]) != 0 for n in MASK_NAMES}


def _affine_grids(size, params):
    """Sampling grids [B, H, W, 2] for the patient affine (+ optional perspective warp)."""
    theta = torch.tensor([[[np.cos(rot) / sc, -np.sin(rot) / sc, tx], [np.sin(rot) / sc, np.cos(rot) / sc, ty]]
                          for rot, sc, tx, ty, _ in params], dtype=torch.float32)
    c = torch.from_numpy(_grid(size)[0][0])                      # pixel-centre coordinates (align_corners=False)
    Xg, Yg = c[None, None, :], c[None, :, None]
    grid = torch.empty(len(params), size, size, 2)
    grid[..., 0] = theta[:, 0, 0, None, None] * Xg + theta[:, 0, 1, None, None] * Yg + theta[:, 0, 2, None, None]
    grid[..., 1] = theta[:, 1, 0, None, None] * Xg + theta[:, 1, 1, None, None] * Yg + theta[:, 1, 2, None, None]
    if all(p[4] is None for p in params):
        return grid
    X, Y = _grid(size)
    g = grid.numpy().copy()
    wx0, wx1, wy0, wy1 = (1 - X) / 2, (1 + X) / 2, (1 - Y) / 2, (1 + Y) / 2
    for i, (rot, sc, tx, ty, d) in enumerate(params):
        if d is None:
            continue
        # bilinear corner displacement (keystone-like); inverse map approximated by -displacement
        x = X - (wy0 * (wx0 * d[0, 0] + wx1 * d[1, 0]) + wy1 * (wx0 * d[2, 0] + wx1 * d[3, 0]))
        y = Y - (wy0 * (wx0 * d[0, 1] + wx1 * d[1, 1]) + wy1 * (wx0 * d[2, 1] + wx1 * d[3, 1]))
        c, s = np.cos(rot), np.sin(rot)
        g[i, ..., 0] = (c * x - s * y) / sc + tx
        g[i, ..., 1] = (s * x + c * y) / sc + ty
    return torch.from_numpy(g)


def render_batch(items: Sequence, seeds: int | Sequence[int] = 0, size: int = 128,
                 site: SiteShift | str | None = None, degrade: Degradation | str | None = None,
                 keys: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fast path: render many films at once.

    ``items``: Reports, or sequences of MeSH term strings / :class:`MeshFinding`. ``seeds``: one int
    for all or one per item. ``keys``: optional stable keys (default: the report uid / sorted terms).
    Returns ``(images float32 [B, H, W] in [0, 1], mask_bits uint8 [B, H, W])``; unpack the bit field
    with :func:`bits_to_masks` (bit ``i`` = ``MASK_NAMES[i]``).
    """
    size = check_size(size)
    site = resolve_preset(site, SITE_PRESETS, SiteShift, "site")
    degrade = resolve_preset(degrade, DEGRADE_PRESETS, Degradation, "degrade")
    B = len(items)
    if isinstance(seeds, (int, np.integer, bool, np.bool_)):
        seeds_l = [check_seed(seeds, "seeds")] * B
    elif isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__len__"):
        raise ValueError(f"seeds must be a non-negative integer or one per item, got {seeds!r}")
    else:
        seeds_l = [check_seed(s, f"seeds[{j}]") for j, s in enumerate(seeds)]
    if len(seeds_l) != B:
        raise ValueError(f"seeds must be an int or have one entry per item ({B}), got {len(seeds_l)}")
    if B == 0:
        return np.zeros((0, size, size), np.float32), np.zeros((0, size, size), np.uint8)
    bankA, bankL, bankM, _, geoms = anatomy_bank(size)
    white, smooth = _noise_tiles(size)
    X, Y = _grid(size)
    A = np.empty((B, size, size), np.float32)
    bits = np.zeros((B, size, size), np.uint8)
    warp, tone, all_keys = [], np.empty((B, 4), np.float64), []
    for i, it in enumerate(items):
        fl, key = _as_findings(it)
        if keys is not None:
            key = keys[i]
        all_keys.append(key)
        rp = _rng("patient", seeds_l[i], key)       # body, pose, exposure: independent of findings
        r = _rng("findings", seeds_l[i], key)       # placement/shape of findings
        k = int(rp.integers(N_BODIES))
        pose = (rp.uniform(-0.05, 0.05), rp.uniform(0.94, 1.06), rp.uniform(-0.04, 0.04), rp.uniform(-0.04, 0.04))
        tone[i] = (rp.uniform(1.15, 1.55), rp.uniform(0.85, 1.15), rp.uniform(0.008, 0.02), rp.integers(0, size * size))
        plan = _plan(fl, r)
        infl, hlev = plan["infl"], plan["heart"]
        A[i] = bankA[k, infl, hlev]
        lung, mark = bankL[k, infl, hlev], bankM[k, infl, hlev]
        g = geoms[k, infl, hlev]
        if any(plan["elev"]):
            g = dict(g)
            g["yd_r"] -= plan["elev"][0]
            g["yd_l"] -= plan["elev"][1]
            for s, e in zip((-1, 1), plan["elev"]):
                if e:
                    sl = _box(size, s * 0.05, s * 1.0, g["yd_r" if s < 0 else "yd_l"] - 0.05, 1.0)
                    A[i][sl] += 0.6 * _sstep(Y[sl] - _dome(X[sl], g, s), 0.03) * lung[sl]
        a, b_ = A[i], bits[i]
        for lab, f in plan["ops"]:
            if lab == "pleural_effusion":
                _paint_effusion(a, b_, lung, g, f, r, size, X, Y)
            elif lab == "pneumothorax":
                _paint_pneumothorax(a, b_, lung, mark, g, f, r, size, X, Y)
            elif lab == "opacity":
                _paint_opacity(a, b_, lung, smooth, g, f, r, size, X, Y)
            elif lab in ("atelectasis", "scar"):
                _paint_atelectasis(a, b_, lung, g, f, r, size, X, Y, scar=lab == "scar")
            elif lab == "nodule":
                _paint_nodule(a, b_, lung, g, f, r, size, X, Y)
            elif lab == "edema":
                _paint_edema(a, lung, g, f, r, size, X, Y)
            elif lab == "device":
                _paint_device(a, g, f, r, size, X, Y)
        corners = None
        if degrade is not None and degrade.perspective > 0:
            corners = rp.uniform(-degrade.perspective, degrade.perspective, (4, 2)).astype(np.float32) * 2
        warp.append((*pose, corners))
    # geometry: one grid_sample for the images, nearest for the mask bits
    grid = _affine_grids(size, warp)
    pad = "zeros" if (degrade is not None and degrade.perspective > 0) else "border"
    At = F.grid_sample(torch.from_numpy(A)[:, None], grid, mode="bilinear", padding_mode=pad, align_corners=False)
    A = At[:, 0].numpy()
    has = np.nonzero(bits.reshape(B, -1).any(1))[0]              # only films with a localised finding
    if len(has):
        idx = torch.from_numpy(has)
        bt = F.grid_sample(torch.from_numpy(bits[has].astype(np.float32))[:, None], grid[idx], mode="nearest",
                           padding_mode="zeros", align_corners=False)
        bits[has] = bt[:, 0].numpy().astype(np.uint8)
    # tone mapping, exposure, quantum noise
    k = (tone[:, 0, None, None] * (site.exposure if site else 1.0)).astype(np.float32)
    img = 1.0 - np.exp(-np.clip(A, 0, None) * k)
    img /= (1.0 - np.exp(-1.3 * k))                               # ~bone-level density -> 1
    np.clip(img, 0, 1, out=img)
    img **= tone[:, 1, None, None].astype(np.float32)
    for i in range(B):
        off = int(tone[i, 3])
        oy, ox = off // size, off % size
        img[i] += np.float32(tone[i, 2]) * white[oy:oy + size, ox:ox + size]
    if site is not None:
        if site.resolution < 1:
            lo = max(8, int(round(size * site.resolution)))
            t = F.interpolate(torch.from_numpy(img)[:, None], size=(lo, lo), mode="area")
            img = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[:, 0].numpy()
        np.clip(img, 0, 1, out=img)
        if site.gamma != 1:
            img **= site.gamma
        if site.contrast != 1:
            m = img.mean(axis=(1, 2), keepdims=True)
            img = m + site.contrast * (img - m)
        img += site.offset
        if site.noise > 0:
            for i in range(B):
                r = _rng("site-noise", seeds_l[i], all_keys[i])
                img[i] += r.normal(0, site.noise, (size, size)).astype(np.float32)
    np.clip(img, 0, 1, out=img)
    if degrade is not None:
        img = _degrade(img, degrade, seeds_l, all_keys, size)
    return np.ascontiguousarray(img, dtype=np.float32), bits


def _degrade(img, d: Degradation, seeds, keys, size):
    if d.blur > 0:
        from scipy.ndimage import gaussian_filter1d

        sig = d.blur * size / 128
        img = gaussian_filter1d(img, sig, axis=1, mode="nearest", truncate=3.0)
        img = gaussian_filter1d(img, sig, axis=2, mode="nearest", truncate=3.0)
    if d.glare > 0:
        X, Y = _grid(size)
        for i in range(len(img)):
            r = _rng("glare", seeds[i], keys[i])
            gx, gy, gr = r.uniform(-0.7, 0.7), r.uniform(-0.7, 0.7), r.uniform(0.25, 0.5)
            img[i] += d.glare * r.uniform(0.6, 1.0) * np.exp(-(((X - gx) / (1.6 * gr)) ** 2 + ((Y - gy) / gr) ** 2))
        np.clip(img, 0, 1, out=img)
    if d.jpeg_quality is not None:
        from PIL import Image

        for i in range(len(img)):
            buf = io.BytesIO()
            Image.fromarray(np.round(img[i] * 255).astype(np.uint8), mode="L").save(buf, "JPEG", quality=int(d.jpeg_quality))
            buf.seek(0)
            img[i] = np.asarray(Image.open(buf), dtype=np.float32) / 255.0
    return img


def render(findings, seed: int = 0, size: int = 128, site: SiteShift | str | None = None,
           degrade: Degradation | str | None = None, key: str | None = None) -> Rendered:
    """Render one film for ``findings`` (a :class:`Report`, MeSH term strings or MeshFindings).

    The random stream is derived from ``(seed, key)``, where ``key`` defaults to the report uid
    (or the sorted MeSH terms), so the same inputs always give identical bytes. ``seed``: a non-negative int.
    An unknown finding name in a term given directly raises ``ValueError`` (see :func:`_as_findings`).
    """
    seed = check_seed(seed)
    fl, k = _as_findings(findings)
    k = key if key is not None else k
    item = findings if isinstance(findings, Report) else fl  # a Report keeps its own (unchecked) terms
    imgs, bits = render_batch([item], [seed], size, site=site, degrade=degrade, keys=[k])
    return Rendered(image=imgs[0], masks=bits_to_masks(bits[0]), findings=fl, key=k, seed=seed)
