"""The pretrained weights the experiments name: list them, check which are missing offline, download them.

Every configuration field that names pretrained weights is declared with :func:`medvlp_lib.config.weights_field`
(a timm model name, a Hugging Face id, or a torchxrayvision weights name), so this module finds them all by walking
each experiment's configuration of a profile (:func:`medvlp_lib.config.weights_of`); nothing is listed by hand.

    python -m medvlp_lib.weights list     --profile gpu   # every (experiment, field, source, name) and its status
    python -m medvlp_lib.weights check    --profile gpu   # exit 1 and name what is missing from the local caches
    python -m medvlp_lib.weights download --profile gpu   # fetch what is missing (needs the internet)

Where the files go: timm and Hugging Face weights into the Hugging Face hub cache (``HF_HOME`` /
``HF_HUB_CACHE``), torchxrayvision weights into its cache folder (``~/.torchxrayvision/models_data``). On a
workstation without internet, run ``download`` where there is one and copy those folders over. The library never
downloads at run time: the book's ``make`` targets set ``HF_HUB_OFFLINE=1``, and a missing file is an error that
names this command.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from .config import weights_of
from .utils import environ

__all__ = ["WeightsEntry", "needed", "is_present", "missing", "download", "main"]

SOURCES = ("timm", "hf", "xrv")


@dataclass(frozen=True)
class WeightsEntry:
    """One named set of weights: ``source`` (``timm`` | ``hf`` | ``xrv``), ``name`` (timm model name, hub id or
    torchxrayvision weights name) and where it is used (``experiment``: configuration ``field`` paths)."""
    source: str
    name: str
    used_by: tuple[str, ...]


def needed(profile: str = "gpu", selected=None) -> list[WeightsEntry]:
    """Every distinct weights name the experiments' ``profile`` configurations declare, sorted by source and
    name, each with the ``experiment:field`` places that use it."""
    from . import experiments

    uses: dict[tuple[str, str], list[str]] = {}
    for name in selected or experiments.names():
        cfg = experiments.get(name).config(profile)
        for field, source, weights in weights_of(cfg):
            uses.setdefault((source, weights), []).append(f"{name}:{field}")
    return [WeightsEntry(s, n, tuple(sorted(u))) for (s, n), u in sorted(uses.items())]


def _timm_hub_id(name: str) -> str:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    hub = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub:
        raise ValueError(f"timm has no Hugging Face hub weights for {name!r} (get_pretrained_cfg gives none)")
    return hub


def _hub_has(repo_id: str, filenames) -> bool:
    from huggingface_hub import try_to_load_from_cache

    for f in filenames:
        hit = try_to_load_from_cache(repo_id, f)
        if isinstance(hit, str) and Path(hit).is_file():
            return True
    return False


def is_present(entry: WeightsEntry) -> bool:
    """Whether ``entry``'s weights are in the local cache (nothing is downloaded; a Hugging Face name may also be a
    local folder holding ``config.json``)."""
    if entry.source == "timm":
        return _hub_has(_timm_hub_id(entry.name), ("model.safetensors", "pytorch_model.bin"))
    if entry.source == "hf":
        local = Path(entry.name).expanduser()
        if (local / "config.json").is_file():
            return True
        return _hub_has(entry.name, ("config.json",)) and _hub_has(entry.name, ("model.safetensors",
                                                                                  "pytorch_model.bin"))
    if entry.source == "xrv":
        from .models.backbones import xrv_weights_file

        return xrv_weights_file(entry.name)[0].is_file()
    raise ValueError(f"unknown weights source {entry.source!r}; expected one of {SOURCES}")


def missing(profile: str = "gpu", selected=None) -> list[WeightsEntry]:
    """The :func:`needed` entries that :func:`is_present` does not find."""
    return [e for e in needed(profile, selected) if not is_present(e)]


def _online():
    return environ(HF_HUB_OFFLINE=None, TRANSFORMERS_OFFLINE=None)


def _fetch_timm(name: str) -> None:
    from huggingface_hub import snapshot_download

    snapshot_download(_timm_hub_id(name))


def _fetch_hf(name: str) -> None:
    from huggingface_hub import snapshot_download

    snapshot_download(name, allow_patterns=["*.json", "*.txt", "*.model", "*.safetensors", "*.bin"])


def _fetch_xrv(name: str) -> None:
    import urllib.request

    from .models.backbones import xrv_weights_file

    path, url = xrv_weights_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    urllib.request.urlretrieve(url, tmp)
    tmp.replace(path)


FETCHERS = {"timm": _fetch_timm, "hf": _fetch_hf, "xrv": _fetch_xrv}


def download(profile: str = "gpu", selected=None, force: bool = False, echo=print) -> list[WeightsEntry]:
    """Fetch every weights entry of ``profile`` that is missing (all with ``force``); returns those fetched. A
    failure (no internet, unknown id) raises after naming the entry."""
    fetched = []
    with _online():
        for entry in needed(profile, selected):
            if not force and is_present(entry):
                echo(f"[weights] present   {entry.source:<5} {entry.name}")
                continue
            echo(f"[weights] fetching  {entry.source:<5} {entry.name}")
            try:
                FETCHERS[entry.source](entry.name)
            except Exception as err:  # noqa: BLE001 -- re-raised with the entry named
                raise RuntimeError(f"could not download {entry.source} weights {entry.name!r} (used by "
                                   f"{', '.join(entry.used_by)}): {type(err).__name__}: {err}") from err
            fetched.append(entry)
    return fetched


def _table(entries, status) -> str:
    rows = [("source", "weights", "status", "used by")]
    rows += [(e.source, e.name, status(e), ", ".join(e.used_by)) for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}" for r in rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medvlp_lib.weights", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("list", "check", "download"))
    parser.add_argument("--profile", default="gpu", choices=("fast", "cpu", "gpu"))
    parser.add_argument("--experiments", nargs="*", default=None, help="only these experiments (default: all)")
    parser.add_argument("--force", action="store_true", help="download: fetch even what is present")
    args = parser.parse_args(argv)
    if args.command == "download":
        fetched = download(args.profile, args.experiments, force=args.force)
        print(f"[weights] fetched {len(fetched)}; all present: {not missing(args.profile, args.experiments)}")
        return 0
    entries = needed(args.profile, args.experiments)
    if not entries:
        print(f"the {args.profile} profile names no pretrained weights")
        return 0
    present = {e: is_present(e) for e in entries}
    print(_table(entries, lambda e: "present" if present[e] else "MISSING"))
    lacking = [e for e in entries if not present[e]]
    if args.command == "check" and lacking:
        print(f"\n{len(lacking)} of {len(entries)} weights are missing offline; run "
              f"`python -m medvlp_lib.weights download --profile {args.profile}` where there is internet "
              f"(then copy the Hugging Face cache, HF_HOME, and ~/.torchxrayvision here)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
