"""Augmentations for two-view (uni-modal) contrastive learning: image batches in torch, reports offline.

Images: :class:`ImageAugmenter` / :func:`augment_images` apply, per sample, a random resized crop
combined with a small rotation and translation (one ``affine_grid``/``grid_sample`` call for the whole
batch), then brightness/contrast jitter and Gaussian noise. No horizontal flip by default: on a chest
radiograph the heart is on the patient's left, and flipping creates anatomically impossible images.
All randomness comes from torch's global RNG (or an explicit ``generator``), so the trainer's
per-step reseeding makes the views reproducible across interrupt/resume.

Reports: the MSD paper augments reports by back-translation (translate to another language and back).
That needs translation models, which this project cannot download at run time, so the default
:class:`ReportAugmenter` is an offline substitute: sentence shuffling, sentence dropping and swaps from
a radiology synonym table (:data:`RADIOLOGY_SYNONYMS`). Anything satisfying the :class:`TextAugmenter`
protocol (a callable ``list[str] -> list[str]``) can be plugged in instead, e.g. a back-translation
wrapper on a machine that has the models.
"""
from __future__ import annotations

import math
import re
from typing import Protocol, Sequence, runtime_checkable

import torch
import torch.nn.functional as F

__all__ = ["ImageAugmenter", "augment_images", "TextAugmenter", "ReportAugmenter", "IdentityTextAugmenter",
           "RADIOLOGY_SYNONYMS", "split_sentences"]


def _rand(n: int, generator: torch.Generator | None, device=None) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device if generator is None else generator.device)


def _uniform(n: int, lo: float, hi: float, generator, device=None) -> torch.Tensor:
    return lo + (hi - lo) * _rand(n, generator, device)


class ImageAugmenter:
    """Random resized crop + affine + brightness/contrast + noise for a batch ``[B, C, H, W]`` in [0, 1].

    Parameters: ``scale`` (area fraction of the crop), ``ratio`` (crop aspect ratio), ``degrees``
    (max absolute rotation), ``translate`` (max shift as a fraction of the image side), ``brightness``
    and ``contrast`` (max relative jitter), ``noise_std`` (Gaussian noise std), ``hflip_p``
    (probability of a horizontal flip; 0 by default, see module docstring). Output shape = input shape.
    """

    def __init__(self, scale: tuple[float, float] = (0.6, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 degrees: float = 10.0, translate: float = 0.05, brightness: float = 0.2,
                 contrast: float = 0.2, noise_std: float = 0.02, hflip_p: float = 0.0):
        if not (0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1 (area fraction), got {scale}")
        if not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"ratio must satisfy 0 < lo <= hi, got {ratio}")
        for name, v in (("degrees", degrees), ("translate", translate), ("brightness", brightness),
                        ("contrast", contrast), ("noise_std", noise_std)):
            if v < 0:
                raise ValueError(f"{name} must be >= 0, got {v}")
        if not 0 <= hflip_p <= 1:
            raise ValueError(f"hflip_p must be a probability in [0, 1], got {hflip_p}")
        self.scale, self.ratio, self.degrees, self.translate = scale, ratio, degrees, translate
        self.brightness, self.contrast, self.noise_std, self.hflip_p = brightness, contrast, noise_std, hflip_p

    def __repr__(self) -> str:
        return (f"ImageAugmenter(scale={self.scale}, ratio={self.ratio}, degrees={self.degrees}, "
                f"translate={self.translate}, brightness={self.brightness}, contrast={self.contrast}, "
                f"noise_std={self.noise_std}, hflip_p={self.hflip_p})")

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(f"x must be an image batch [B, C, H, W], got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if not x.dtype.is_floating_point:
            raise TypeError(f"x must be a floating tensor with values in [0, 1], got dtype {x.dtype}")
        b, dev, dt = x.shape[0], x.device, x.dtype
        if b == 0:
            return x.clone()
        u = lambda lo, hi: _uniform(b, lo, hi, generator).to(device=dev, dtype=dt)  # noqa: E731
        area = u(*self.scale)
        log_r = u(math.log(self.ratio[0]), math.log(self.ratio[1]))
        r = torch.exp(log_r)
        sx = torch.sqrt(area * r).clamp(max=1.0)   # crop width as a fraction of the image
        sy = torch.sqrt(area / r).clamp(max=1.0)
        cx = (1 - sx) * u(-1.0, 1.0) + u(-1.0, 1.0) * 2 * self.translate  # crop centre in [-1, 1] units
        cy = (1 - sy) * u(-1.0, 1.0) + u(-1.0, 1.0) * 2 * self.translate
        ang = u(-1.0, 1.0) * math.radians(self.degrees)
        flip = torch.where(u(0.0, 1.0) < self.hflip_p, -1.0, 1.0).to(dt)
        cos, sin = torch.cos(ang), torch.sin(ang)
        theta = torch.stack([torch.stack([sx * cos * flip, -sy * sin, cx], -1),
                             torch.stack([sx * sin * flip, sy * cos, cy], -1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        c = 1 + u(-self.contrast, self.contrast).view(b, 1, 1, 1)
        bri = u(-self.brightness, self.brightness).view(b, 1, 1, 1)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * c + mean + bri
        if self.noise_std > 0:
            noise = torch.randn(out.shape, generator=generator,
                                device=dev if generator is None else generator.device)
            out = out + self.noise_std * noise.to(device=dev, dtype=dt)
        return out.clamp(0.0, 1.0)


def augment_images(x: torch.Tensor, generator: torch.Generator | None = None, **kwargs) -> torch.Tensor:
    """Functional form of :class:`ImageAugmenter` (``kwargs`` are its parameters)."""
    return ImageAugmenter(**kwargs)(x, generator=generator)


@runtime_checkable
class TextAugmenter(Protocol):
    """Anything that maps a list of reports to a list of augmented reports of the same length."""

    def __call__(self, texts: Sequence[str]) -> list[str]: ...


class IdentityTextAugmenter:
    """Returns the reports unchanged (use when text views should be identical)."""

    def __call__(self, texts: Sequence[str]) -> list[str]:
        return list(texts)


#: Pairs of interchangeable radiology phrases; swaps go both ways. Longest phrases are matched first.
RADIOLOGY_SYNONYMS: tuple[tuple[str, str], ...] = (
    ("no acute cardiopulmonary abnormality", "no acute cardiopulmonary process"),
    ("no acute cardiopulmonary disease", "no acute cardiopulmonary findings"),
    ("heart size normal", "normal heart size"),
    ("heart size is normal", "the cardiac silhouette is normal in size"),
    ("heart is normal in size", "cardiac size is within normal limits"),
    ("cardiomegaly", "enlarged cardiac silhouette"),
    ("pleural effusion", "pleural fluid"),
    ("effusion", "fluid collection"),
    ("pneumothorax", "collapsed lung"),
    ("no pneumothorax", "no evidence of pneumothorax"),
    ("no focal consolidation", "no focal airspace consolidation"),
    ("consolidation", "airspace consolidation"),
    ("airspace disease", "airspace opacity"),
    ("opacity", "opacification"),
    ("atelectasis", "subsegmental collapse"),
    ("lungs are clear", "lungs are clear bilaterally"),
    ("clear lungs", "lungs clear"),
    ("mediastinal contours are normal", "normal mediastinal contours"),
    ("mediastinum is normal", "mediastinal silhouette is normal"),
    ("pulmonary vascularity is normal", "normal pulmonary vasculature"),
    ("pulmonary edema", "pulmonary oedema"),
    ("vascular congestion", "pulmonary venous congestion"),
    ("degenerative changes", "degenerative disease"),
    ("thoracic spine", "dorsal spine"),
    ("granuloma", "granulomatous nodule"),
    ("calcified granuloma", "calcified nodule"),
    ("emphysema", "emphysematous changes"),
    ("hyperinflated lungs", "hyperexpanded lungs"),
    ("unremarkable", "within normal limits"),
    ("stable", "unchanged"),
    ("no evidence of", "no sign of"),
    ("bilateral", "both sides"),
    ("left lower lobe", "left base"),
    ("right lower lobe", "right base"),
)


_SENT_RE = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    """Split a report into sentences at ``.``, ``!`` or ``?`` followed by whitespace (empty ones dropped)."""
    return [s.strip() for s in _SENT_RE.split(text.strip()) if s.strip()]


def _match_case(src: str, repl: str) -> str:
    if src[:1].isupper():
        return repl[:1].upper() + repl[1:]
    return repl


class ReportAugmenter:
    """Offline report augmentation: synonym swaps, sentence dropping, sentence shuffling.

    For each report (independently, using torch's global RNG or ``generator``):
    1. every occurrence of a phrase from ``synonyms`` is replaced by one of its partners with
       probability ``p_synonym`` (case-insensitive, whole words; first-letter case preserved);
    2. each sentence is dropped with probability ``p_drop``, keeping at least ``min_sentences``;
    3. with probability ``p_shuffle`` the remaining sentences are permuted.
    Reports with no sentence boundary pass through step 2-3 unchanged. The paper used back-translation
    instead; see the module docstring.
    """

    def __init__(self, p_synonym: float = 0.5, p_drop: float = 0.15, p_shuffle: float = 0.5,
                 min_sentences: int = 1, synonyms: Sequence[tuple[str, str]] = RADIOLOGY_SYNONYMS,
                 generator: torch.Generator | None = None):
        for name, v in (("p_synonym", p_synonym), ("p_drop", p_drop), ("p_shuffle", p_shuffle)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {v}")
        if min_sentences < 1:
            raise ValueError(f"min_sentences must be >= 1, got {min_sentences}")
        self.p_synonym, self.p_drop, self.p_shuffle = p_synonym, p_drop, p_shuffle
        self.min_sentences, self.generator = min_sentences, generator
        table: dict[str, list[str]] = {}
        for pair in synonyms:
            if len(pair) != 2 or not all(isinstance(s, str) and s.strip() for s in pair):
                raise ValueError(f"synonyms must be pairs of non-empty strings, got {pair!r}")
            a, b = pair[0].lower().strip(), pair[1].lower().strip()
            table.setdefault(a, []).append(b)
            table.setdefault(b, []).append(a)
        self.table = {k: sorted(set(v)) for k, v in table.items()}
        phrases = sorted(self.table, key=len, reverse=True)
        self._re = re.compile(r"\b(" + "|".join(re.escape(p) for p in phrases) + r")\b", re.IGNORECASE) \
            if phrases else None

    def _r(self) -> float:
        return float(torch.rand(1, generator=self.generator))

    def _swap(self, match: re.Match) -> str:
        src = match.group(0)
        if self._r() >= self.p_synonym:
            return src
        options = self.table[src.lower()]
        choice = options[int(torch.randint(len(options), (1,), generator=self.generator))]
        return _match_case(src, choice)

    def augment_one(self, text: str) -> str:
        if not isinstance(text, str):
            raise TypeError(f"each report must be a str, got {type(text).__name__}")
        if self._re is not None and self.p_synonym > 0:
            text = self._re.sub(self._swap, text)
        sents = split_sentences(text)
        if len(sents) <= 1:
            return text.strip()
        keep = [s for s in sents if self._r() >= self.p_drop]
        if len(keep) < self.min_sentences:
            need = min(self.min_sentences, len(sents))
            idx = sorted(torch.randperm(len(sents), generator=self.generator)[:need].tolist())
            keep = [sents[i] for i in idx]
        if len(keep) > 1 and self._r() < self.p_shuffle:
            perm = torch.randperm(len(keep), generator=self.generator).tolist()
            keep = [keep[i] for i in perm]
        return " ".join(keep)

    def __call__(self, texts: Sequence[str]) -> list[str]:
        if isinstance(texts, str):
            raise TypeError("texts must be a list of reports, got a single str (wrap it in a list)")
        return [self.augment_one(t) for t in texts]
