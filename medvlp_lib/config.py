"""Typed, frozen configurations: a misspelled key or a wrong type is an error, not a silent default.

Every experiment's configuration is a frozen dataclass derived from :class:`Config` (one class per chapter,
e.g. ``experiments.clip_baseline.ClipConfig``); its profiles (``fast`` / ``cpu`` / ``gpu``) are instances
derived from one another with :meth:`Config.replace`. What the base class adds to a plain frozen dataclass:

* **types** -- every field is checked against its annotation when an instance is made (``int``, ``float``,
  ``bool``, ``str``, ``X | None``, ``Literal[...]``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``dict[str, X]``, a
  nested dataclass, :class:`Variant`); lists become tuples and ints become floats where the field is a
  float, so a config read back from JSON equals the one that wrote it. A subclass adds value checks in its
  own ``__post_init__`` (after ``super().__post_init__()``), e.g. with :func:`require`;
* **names** -- :meth:`Config.replace` (``cfg.replace(epochs=3)``, ``cfg.replace(**{"ssl.steps": 5})``) and
  :func:`override` reject an unknown key with an error naming it, the closest known key and every known key;
  a nested dataclass field takes a dict of changes (``ssl={"steps": 5}`` keeps the other SSL settings);
* **text** -- :func:`parse_value` turns ``--set key=value`` text into the field's type (``3``, ``1e-3``,
  ``None``, ``(16, 64)``, or a bare word for a string field);
* **records** -- :meth:`Config.to_dict` is :func:`dataclasses.asdict` (what results files record) and
  :meth:`Config.from_dict` reads it back (``from_dict(cfg.to_dict()) == cfg``).

:class:`Variant` replaces name mini-languages such as ``"momkd:n_slots=4"``: a method name plus the settings it
changes, ``Variant("momkd", {"n_slots": 4})``, with the key its results are filed under (``momkd_n_slots4``).
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

__all__ = ["Config", "ExperimentConfig", "DATA_SOURCES", "weights_field", "weights_of", "Variant", "override",
           "parse_value", "coerce", "field_type", "require", "describe", "changed_fields"]


# ------------------------------------------------------------------------------------------------- variants
def _key_part(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclasses.dataclass(frozen=True)
class Variant:
    """A method and the settings it changes: ``Variant("momkd")``, ``Variant("momkd", {"n_slots": 4})``.

    ``name`` says what is built (a method name the experiment knows); ``overrides`` the settings that differ
    from the experiment's configuration (config fields, or whatever the experiment documents, e.g. MoMKD's
    named ablation ``{"variant": "no_recon"}``); ``key`` is the key its results are filed under, by default
    ``name`` followed by ``_<setting><value>`` per override (``momkd_n_slots4``). Recorded in results files as
    ``{"name", "overrides", "key"}`` and read back by :func:`coerce`.
    """
    name: str
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    key: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"Variant.name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.overrides, Mapping) or not all(isinstance(k, str) for k in self.overrides):
            raise TypeError(f"Variant.overrides must map setting names to values, got {self.overrides!r}")
        if not isinstance(self.key, str):
            raise TypeError(f"Variant.key must be a string, got {self.key!r}")
        object.__setattr__(self, "overrides", dict(self.overrides))
        if not self.key:
            object.__setattr__(self, "key", self._derived_key())

    def _derived_key(self) -> str:
        return "_".join([self.name, *(f"{k}{_key_part(v)}" for k, v in self.overrides.items())])

    def __hash__(self):
        return hash((self.name, tuple(sorted((k, repr(v)) for k, v in self.overrides.items())), self.key))

    def __str__(self):
        """``name(setting=value, ...)``, preceded by ``key: `` when the key is not the derived one."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.overrides.items())
        text = f"{self.name}({args})" if args else self.name
        return text if self.key == self._derived_key() else f"{self.key}: {text}"


# ------------------------------------------------------------------------------------------------- types
@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _fields(cls_or_obj) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls_or_obj) if f.init}


def _type_name(tp) -> str:
    if tp is type(None):
        return "None"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _is_union(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


_SCALARS = {bool: (bool, "True or False"), int: (int, "an integer"), float: ((int, float), "a number"),
            str: (str, "a string")}


def coerce(value, tp, where: str = "value"):
    """``value`` as an instance of the annotation ``tp``, or a ``TypeError`` naming ``where`` and the type.

    Lists become tuples, ints become floats for a float, dicts become the nested dataclass / :class:`Variant`
    they describe (a :class:`Variant` may also be given as a bare name or a ``(name, overrides)`` pair).
    """
    if tp is Any:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_union(tp):
        options = [a for a in args if a is not type(None)]
        if value is None and len(options) < len(args):
            return None
        if len(options) == 1:  # X | None: the error of X says more
            return coerce(value, options[0], where)
        for option in options:
            try:
                return coerce(value, option, where)
            except (TypeError, ValueError):
                pass
        raise TypeError(f"{where} must be {_type_name(tp)}, got {value!r}")
    if tp is type(None) or tp is None:
        if value is None:
            return None
        raise TypeError(f"{where} must be None, got {value!r}")
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise TypeError(f"{where} must be one of {list(args)}, got {value!r}")
    if tp in _SCALARS:  # a bool is never taken for a number
        accepted, text = _SCALARS[tp]
        if isinstance(value, accepted) and (tp is bool or not isinstance(value, bool)):
            return tp(value)
        raise TypeError(f"{where} must be {text}, got {value!r}")
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
            raise TypeError(f"{where} must be a tuple ({_type_name(tp)}), got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise TypeError(f"{where} must have {len(args)} entries ({_type_name(tp)}), got {value!r}")
        return tuple(coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise TypeError(f"{where} must be a dict ({_type_name(tp)}), got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {coerce(k, kt, f"{where} key"): coerce(v, vt, f"{where}[{k!r}]") for k, v in value.items()}
    if tp is Variant:
        if isinstance(value, Variant):
            return value
        if isinstance(value, str):
            return Variant(value)
        if isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[1], Mapping):
            return Variant(value[0], value[1])
        if isinstance(value, Mapping) and "name" in value and set(value) <= {"name", "overrides", "key"}:
            return Variant(value["name"], value.get("overrides", {}), value.get("key", ""))
        raise TypeError(f"{where} must be a Variant (a method name, a (name, overrides) pair or "
                        f"{{'name': ..., 'overrides': {{...}}}}), got {value!r}")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            _check_names(tp, value, f"{where} ({tp.__name__})")
            hints = _hints(tp)
            return tp(**{k: coerce(v, hints[k], f"{where}.{k}") for k, v in value.items()})
        raise TypeError(f"{where} must be a {tp.__name__} or a dict of its fields, got {value!r}")
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise TypeError(f"{where} must be a {tp.__name__}, got {value!r}")
    raise TypeError(f"{where}: unsupported annotation {tp!r}")


def _check_names(cls, names, where: str, what: str = "key", prefix: str = ""):
    known = list(_fields(cls))
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
            raise ValueError(f"unknown {what} {prefix + name!r} for {where}{hint}; known keys: "
                             + ", ".join(prefix + k for k in sorted(known)))


def field_type(cls, key: str):
    """The annotation of ``key`` (dotted for a nested dataclass: ``"ssl.steps"``) in the dataclass ``cls``."""
    head, _, rest = key.partition(".")
    _check_names(cls, [head], cls.__name__)
    tp = _hints(cls)[head]
    if not rest:
        return tp
    if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
        raise ValueError(f"{cls.__name__}.{head} is not a nested configuration, so {key!r} names nothing")
    return field_type(tp, rest)


# ------------------------------------------------------------------------------------------------- the base
@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Base of the typed configurations (see the module docstring). Subclasses are
    ``@dataclass(frozen=True, kw_only=True)`` and call ``super().__post_init__()`` first in theirs."""

    def __post_init__(self):
        hints = _hints(type(self))
        for name in _fields(self):
            value = getattr(self, name)
            new = coerce(value, hints[name], f"{type(self).__name__}.{name}")
            if new is not value:
                object.__setattr__(self, name, new)

    def replace(self, **changes) -> "Config":
        """A copy with ``changes`` (see :func:`override`); an unknown key is a ``ValueError``."""
        return override(self, changes)

    def to_dict(self) -> dict:
        """The plain dict a results file records (:func:`dataclasses.asdict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def derive(cls, base, *, drop=(), **changes) -> "Config":
        """A ``cls`` holding every field of ``base`` (a configuration of another class, e.g. the chapter it builds
        on) but those named in ``drop``, then ``changes`` (validated as by :meth:`replace`). A field of ``base``
        that ``cls`` lacks and ``drop`` does not name is an error, so nothing is lost silently."""
        known = set(_fields(cls))
        kept = {k: getattr(base, k) for k in _fields(base) if k not in drop}
        lost = sorted(set(kept) - known)
        if lost:
            raise ValueError(f"{cls.__name__} has no field for {lost} of {type(base).__name__}; pass drop={lost} "
                             "to leave them out")
        _check_names(cls, [k.partition(".")[0] for k in changes], cls.__name__)
        hints = _hints(cls)
        nested = {k: v for k, v in changes.items() if "." in k or (isinstance(v, Mapping) and k in kept and
                                                                 dataclasses.is_dataclass(hints[k]))}
        plain = {k: v for k, v in changes.items() if k not in nested}
        return override(cls(**{**kept, **plain}), nested)

    @classmethod
    def from_dict(cls, data: Mapping) -> "Config":
        """The configuration a :meth:`to_dict` dict describes (unknown keys are an error)."""
        return coerce(data, cls, cls.__name__)

    @classmethod
    def field_names(cls) -> list[str]:
        return list(_fields(cls))


def override(cfg, changes: Mapping | None, where: str = "", what: str = "key", prefix: str = ""):
    """``cfg`` (a frozen dataclass) with ``changes`` applied, validated like a new instance.

    Keys are field names, or dotted paths into a nested dataclass (``"ssl.steps"``); a dict given for a nested
    dataclass field changes only the fields it names. An unknown key raises ``ValueError`` naming it, the
    closest known key and the known keys (``what``/``where`` word the message, e.g. "override" / "experiment
    'x'"); a wrong type raises ``TypeError`` naming the field. ``prefix``: the dotted path of ``cfg`` inside an
    outer configuration (for the messages).
    """
    if not changes:
        return cfg
    cls = type(cfg)
    where = where or cls.__name__
    direct: dict[str, Any] = {}
    nested: dict[str, dict] = {}
    for key, value in changes.items():
        if not isinstance(key, str):
            raise TypeError(f"{what} names must be strings, got {key!r} for {where}")
        head, _, rest = key.partition(".")
        _check_names(cls, [head], where, what, prefix)
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    hints = _hints(cls)
    for head, value in list(direct.items()):
        tp = hints[head]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
            nested[head] = {**value, **nested.get(head, {})}
            del direct[head]
    for head, sub in nested.items():
        if head in direct:
            raise ValueError(f"{what} {prefix + head!r} for {where} is given both whole and by its fields "
                             f"{sorted(sub)}")
        current = getattr(cfg, head)
        if not dataclasses.is_dataclass(current):
            raise ValueError(f"{cls.__name__}.{head} is not a nested configuration, so {head}.{next(iter(sub))!r} "
                             f"names nothing")
        direct[head] = override(current, sub, where, what, f"{prefix}{head}.")
    for head, value in direct.items():
        direct[head] = coerce(value, hints[head], f"{cls.__name__}.{head}")
    return dataclasses.replace(cfg, **direct)


def parse_value(text: str, tp, where: str = "value"):
    """``--set`` text as a value of the annotation ``tp``: a Python literal (``3``, ``1e-3``, ``None``,
    ``(16, 64)``, ``{"steps": 5}``), or the bare text where ``tp`` accepts a string (``--set proj=linear``)."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    try:
        return coerce(value, tp, where)
    except (TypeError, ValueError):
        if value is not text:
            try:
                return coerce(text, tp, where)
            except (TypeError, ValueError):
                pass
        raise


def require(cfg, *, positive=(), non_negative=(), unit=(), unique=()):
    """Value checks for ``__post_init__``: every named field (each number in a tuple field; ``None`` skipped) is
    ``> 0`` (``positive``), ``>= 0`` (``non_negative``) or in ``[0, 1]`` (``unit``); ``unique`` tuple fields
    hold no repeated entry. Raises ``ValueError`` naming the field and the value."""
    def flat(v):
        return [y for x in v for y in flat(x)] if isinstance(v, tuple) else ([] if v is None else [v])

    def values(name):
        return flat(getattr(cfg, name))

    checks = [(positive, lambda x: x > 0, "> 0"), (non_negative, lambda x: x >= 0, ">= 0"),
              (unit, lambda x: 0 <= x <= 1, "in [0, 1]")]
    for names, ok, text in checks:
        for name in names:
            bad = [x for x in values(name) if not ok(x)]
            if bad:
                raise ValueError(f"{type(cfg).__name__}.{name} must be {text}, got {getattr(cfg, name)!r}")
    for name in unique:
        v = getattr(cfg, name)
        if len(set(v)) != len(v):
            raise ValueError(f"{type(cfg).__name__}.{name} holds a repeated entry: {v!r}")


# ------------------------------------------------------------------------------------------------- display
def _flat(cfg, prefix: str = "") -> dict[str, Any]:
    out = {}
    for name in _fields(cfg):
        value = getattr(cfg, name)
        if dataclasses.is_dataclass(value) and not isinstance(value, Variant):
            out.update(_flat(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = value
    return out


def _show(value) -> str:
    if isinstance(value, Variant):
        return str(value)
    if isinstance(value, tuple) and any(isinstance(v, Variant) for v in value):
        return "(" + ", ".join(map(str, value)) + ")"
    return repr(value)


def changed_fields(cfg, base) -> dict[str, Any]:
    """Dotted field -> value for every field of ``cfg`` that differs from ``base`` (same class)."""
    a, b = _flat(cfg), _flat(base)
    return {k: v for k, v in a.items() if b.get(k, object()) != v}


def describe(cfg, base=None, sep: str | None = "  "):
    """``key=value`` for every field (dotted into nested dataclasses), or only those differing from ``base``,
    joined by ``sep`` (``None``: the list of items)."""
    items = _flat(cfg) if base is None else changed_fields(cfg, base)
    shown = [f"{k}={_show(v)}" for k, v in items.items()]
    return shown if sep is None else (sep.join(shown) or "(same)")


# ------------------------------------------------------------------------------------------------- experiments
DATA_SOURCES = ("embedded", "real")
"""Where an experiment's data come from: ``"embedded"`` (the offline benchmark that ships with the packages:
IU X-Ray reports + rendered films, simulated slides, natural crops) or ``"real"`` (the papers' datasets under
``MEDVLP_DATA``, read by :mod:`medvlp_lib.data.real`)."""

WEIGHT_SOURCES = ("timm", "hf", "xrv")


def weights_field(default, source: str, **kwargs):
    """A configuration field naming pretrained weights (a timm model name, a Hugging Face id, a torchxrayvision
    weights name, or a tuple of them) from ``source`` (:data:`WEIGHT_SOURCES`). ``python -m medvlp_lib.weights``
    collects these fields from every experiment's gpu profile to download or check the weights."""
    if source not in WEIGHT_SOURCES:
        raise ValueError(f"source must be one of {WEIGHT_SOURCES}, got {source!r}")
    return dataclasses.field(default=default, metadata={"weights": source, **kwargs.pop("metadata", {})}, **kwargs)


def weights_of(cfg) -> list[tuple[str, str, str]]:
    """``(field path, source, name)`` of every weights field in ``cfg`` (nested configurations included; a
    ``None`` or empty name means "none needed": the packaged or randomly initialised model)."""
    out = []

    def walk(obj, prefix):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            source = f.metadata.get("weights")
            if source is not None:
                for v in (value if isinstance(value, (tuple, list)) else (value,)):
                    if isinstance(v, str) and v:
                        out.append((prefix + f.name, source, v))
            elif dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")

    walk(cfg, "")
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExperimentConfig(Config):
    """Fields every experiment's configuration has (chapter configurations extend it).

    ``data``: ``"embedded"`` or ``"real"`` (:data:`DATA_SOURCES`); every ``gpu`` profile uses ``"real"``.
    ``num_workers`` / ``amp``: the trainer's DataLoader workers and mixed precision (``None``, ``"bf16"``,
    ``"fp16"``, ``"auto"``; see :func:`medvlp_lib.train.fit`) -- engineering, not results: they are recorded but
    do not change what is trained beyond float rounding.
    """
    data: Literal["embedded", "real"] = "embedded"
    num_workers: int = 0
    amp: Literal["bf16", "fp16", "auto"] | None = None

    def __post_init__(self):
        super().__post_init__()
        require(self, non_negative=("num_workers",))

    def smoke(self) -> "ExperimentConfig":
        """This configuration shrunk to a smoke run of the same code path: the same data source, loaders and
        model classes, tiny sizes and a few steps (``python -m medvlp_lib.experiments smoke``). Every chapter's
        configuration overrides it; the base refuses, so a gpu path without a smoke run cannot go unnoticed."""
        raise TypeError(f"{type(self).__name__} defines no smoke() run: a chapter configuration must say how its gpu "
                        "path shrinks to a smoke test")
