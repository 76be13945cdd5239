"""Small runtime helpers shared by every chapter: device choice, seeding, AMP, provenance.

One home for each of these so that notebooks, experiments and tests agree on them.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import random
import subprocess
from pathlib import Path

import numpy as np
import torch

__all__ = ["get_device", "check_seed", "seed_everything", "preserved_rng", "environ", "autocast", "amp_dtype",
           "AMP_MODES", "git_commit", "project_root", "results_dir", "lazy_exports", "safe_torch_load",
           "UnsafeFileError"]


def get_device(prefer: str | None = None) -> torch.device:
    """Return the best available device: CUDA, then Apple MPS, then CPU.

    ``prefer`` (or the environment variable ``MEDVLP_DEVICE``) forces a device, e.g. ``"cpu"``.
    """
    prefer = prefer or os.environ.get("MEDVLP_DEVICE")
    if prefer:
        dev = torch.device(prefer)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device={prefer!r} was requested but CUDA is not available on this machine")
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise RuntimeError(f"device={prefer!r} was requested but Apple MPS is not available on this machine")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def check_seed(seed, name: str = "seed") -> int:
    """``seed`` as a Python ``int``; ``ValueError`` naming ``name`` unless it is a non-negative integer.

    Accepted: ``int`` and NumPy integers >= 0. Rejected (never silently converted): ``bool``, floats (``1.7``
    would become 1), strings (``"3"``), sequences (``[1.5]``) and negative numbers. Every public function of the
    library that takes a seed validates it here.
    """
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {seed!r} ({type(seed).__name__})")
    return int(seed)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices) from one integer; returns a seeded CPU generator."""
    seed = check_seed(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def preserved_rng():
    """Run a block that may reseed the global RNGs (Python, NumPy, torch CPU) and restore them afterwards."""
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


@contextlib.contextmanager
def environ(**values: str | None):
    """Set (a ``str``) or unset (``None``) environment variables for a block, restoring the previous values after.

    >>> with environ(MEDVLP_DATA="/data", HF_HUB_OFFLINE=None): ...
    """
    def apply(mapping):
        for k, v in mapping.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    saved = {k: os.environ.get(k) for k in values}
    try:
        apply(values)
        yield
    finally:
        apply(saved)


AMP_MODES = (None, "off", "bf16", "fp16", "auto")
"""Values of the mixed-precision switch (:func:`amp_dtype`, ``Trainer(amp=...)``, ``fit(amp=...)``)."""


def amp_dtype(amp: str | None, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype that the mixed-precision switch ``amp`` means on ``device`` (``None`` = full precision).

    ``None`` / ``"off"``: full precision. ``"bf16"``: bfloat16 on CUDA (``ValueError`` if the GPU lacks it) or on
    CPU (torch's CPU autocast). ``"fp16"``: float16, CUDA only (it needs a ``GradScaler``, see ``Trainer``).
    ``"auto"``: bfloat16 on a CUDA device that supports it, else full precision (never float16, which needs
    loss scaling and can overflow).
    """
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    device = torch.device(device)
    if amp in (None, "off"):
        return None
    cuda_bf16 = device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if amp == "auto":
        return torch.bfloat16 if cuda_bf16 else None
    if amp == "fp16":
        if device.type != "cuda":
            raise ValueError(f"amp='fp16' needs a CUDA device, got device {device}; use amp='bf16' (CPU autocast) "
                             "or amp=None")
        return torch.float16
    if device.type == "cuda" and not cuda_bf16:
        raise ValueError(f"amp='bf16': this GPU ({device}) does not support bfloat16; use amp='fp16' (with loss "
                         "scaling) or amp=None")
    if device.type not in ("cuda", "cpu"):
        raise ValueError(f"amp='bf16' is supported on CUDA and CPU devices, got {device}")
    return torch.bfloat16


def autocast(device: torch.device | str, amp: str | None = "auto"):
    """Autocast context for the mixed-precision switch ``amp`` on ``device`` (see :func:`amp_dtype`); a no-op
    when it means full precision. The default ``"auto"``: bfloat16 on a CUDA device that supports it, else off."""
    device = torch.device(device)
    dtype = amp_dtype(amp, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def project_root() -> Path:
    """The repository root (the folder holding ``pyproject.toml``), or the current folder."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def results_dir() -> Path:
    """Where experiment and benchmark results are written (``MEDVLP_RESULTS`` overrides)."""
    path = Path(os.environ.get("MEDVLP_RESULTS", project_root() / "results"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def git_commit() -> str:
    """The current git commit (with ``-dirty`` if tracked files other than ``results/`` have uncommitted changes),
    or ``"unknown"``. Results files are outputs, not code: one re-run writes many of them at one commit."""
    root = project_root()
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, check=True).stdout.splitlines()
        dirty = [line for line in status if line.strip() and not line[3:].startswith("results/")]
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def lazy_exports(package: str, names: dict[str, str]):
    """Module-level ``__getattr__`` / ``__dir__`` re-exporting ``names[attr]`` submodules on first access.

    Lets ``medvlp_lib.methods.MSD`` work without importing every chapter's module (and its dependencies,
    e.g. torch_geometric) when only one is needed (PEP 562).
    """
    import importlib

    def __getattr__(attr: str):
        if attr in names:
            return getattr(importlib.import_module(f"{package}.{names[attr]}"), attr)
        raise AttributeError(f"module {package!r} has no attribute {attr!r}")

    def __dir__():
        return sorted(set(names) | set(importlib.import_module(package).__dict__))

    return __getattr__, __dir__


class UnsafeFileError(ValueError):
    """A torch file holds pickled objects other than tensors and plain containers (possibly code); not loaded."""


def safe_torch_load(path: str | os.PathLike, what: str = "file", map_location="cpu", mmap: bool = False):
    """``torch.load(path, weights_only=True)`` with errors that name the file: the one way the library reads a
    ``.pt`` file (checkpoints, caches, feature files).

    ``weights_only=True`` unpickles tensors, numbers, strings and lists / tuples / dicts of them only; a crafted
    pickle (a class whose ``__reduce__`` runs a command) is refused before anything runs. Raises
    ``FileNotFoundError`` (missing), :class:`UnsafeFileError` (other objects in the pickle; never retried
    without ``weights_only``) or ``ValueError`` (truncated / not a torch file); each names ``what`` and ``path``.
    ``mmap=True`` maps the tensors' storage instead of reading it (shapes are then cheap to inspect; files in
    the legacy non-zip format are read in full).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        if mmap:
            try:
                return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
            except RuntimeError as err:
                if "mmap" not in str(err):
                    raise
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        glob = next((ln for ln in lines if "GLOBAL" in ln), None)
        if glob is not None:
            raise UnsafeFileError(f"{what} {path} holds pickled Python objects besides tensors and plain containers "
                                  f"(possibly code: {glob}); it was not loaded. Delete or rebuild it; the library "
                                  f"reads torch files with weights_only=True only") from err
        reason = next((ln for ln in lines if "Unsupported" in ln or "invalid" in ln.lower()),
                      lines[-1] if lines else "")
        raise ValueError(f"{what} {path} is corrupt or not a torch file (UnpicklingError: {reason})") from err
    except Exception as err:  # noqa: BLE001 -- truncated zip, wrong magic number, EOF, ...
        first = str(err).splitlines()[0] if str(err) else ""
        raise ValueError(f"{what} {path} is corrupt or not a torch file ({type(err).__name__}: {first})") from err
