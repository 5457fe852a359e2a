"""Build frozen dataclasses from parsed YAML, with one-line errors that name the dotted field.

A dataclass field's type hint says what is accepted (``int``, ``float``, ``bool``, ``str``, ``Literal[...]``,
``X | None``, ``tuple[X, ...]``, a nested dataclass, or a union of those); ``field(metadata=...)`` adds numeric bounds
(``ge``, ``gt``, ``le``, ``lt``) and a ``pattern`` for strings. Unknown keys, missing required keys, wrong types and
out-of-range values raise ``ConfigError`` naming the field, e.g. ``unlearning.lambda: expected float > 0, got -1``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin


class ConfigError(ValueError):
    """A scenario (or a method's hyperparameter block) is invalid. ``str(err)`` is one line: file, field, problem."""

    def __init__(self, field: str, message: str, file: str | None = None) -> None:
        self.field, self.message, self.file = field, message, file
        super().__init__(self._text())

    def _text(self) -> str:
        parts = [p for p in (self.file, self.field) if p]
        return ": ".join(parts + [self.message])

    def with_file(self, file: str) -> ConfigError:
        return ConfigError(self.field, self.message, file)

    def __str__(self) -> str:
        return self._text()


def bounds(**kw: Any) -> dict[str, Any]:
    """Metadata for a numeric field: ``bounds(gt=0)``, ``bounds(ge=0, lt=1)``."""
    return kw


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return str(value)


def _range_text(meta: dict[str, Any]) -> str:
    ops = [(">=", "ge"), (">", "gt"), ("<=", "le"), ("<", "lt")]
    return " and ".join(f"{sym} {meta[k]}" for sym, k in ops if k in meta)


def _describe(tp: Any, meta: dict[str, Any]) -> str:
    origin = get_origin(tp)
    rng = _range_text(meta)
    if tp is int:
        return f"int {rng}".strip()
    if tp is float:
        return f"float {rng}".strip()
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        # "or null" is left out: an optional field's null is its default, and the message is about the value given
        return " or ".join(_describe(a, meta) for a in get_args(tp) if a is not type(None))
    if origin is tuple:
        return f"a list of {_describe(get_args(tp)[0], meta)}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return str(tp)


def _check_range(value: float, meta: dict[str, Any]) -> bool:
    return not (
        ("ge" in meta and value < meta["ge"])
        or ("gt" in meta and value <= meta["gt"])
        or ("le" in meta and value > meta["le"])
        or ("lt" in meta and value >= meta["lt"])
    )


class _Mismatch(Exception):
    """Internal: the value does not fit the type (the caller words the error)."""


def convert(tp: Any, value: Any, path: str, meta: dict[str, Any] | None = None) -> Any:
    """Check ``value`` against type hint ``tp`` and return it in canonical form (tuples for lists, floats for ints)."""
    meta = meta or {}
    try:
        return _convert(tp, value, path, meta)
    except _Mismatch:
        raise ConfigError(path, f"expected {_describe(tp, meta)}, got {_show(value)}") from None


def _convert(tp: Any, value: Any, path: str, meta: dict[str, Any]) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, path, meta)
            except _Mismatch:
                continue
            except ConfigError as e:  # right type, bad content: report that
                errors.append(e)
        if errors:
            raise errors[0]
        raise _Mismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Mismatch
        if not _check_range(value, meta):
            raise _Mismatch
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string; accept plain numeric text
            try:
                value = float(value)
            except ValueError:
                raise _Mismatch from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Mismatch
        value = float(value)
        if value != value or not _check_range(value, meta):
            raise _Mismatch
        return value
    if tp is str:
        if not isinstance(value, str):
            raise _Mismatch
        if "pattern" in meta and not re.fullmatch(meta["pattern"], value):
            raise ConfigError(path, f"expected a string matching {meta['pattern']}, got {value!r}")
        return value
    if origin is Literal:
        if isinstance(value, bool) or value not in get_args(tp):
            raise _Mismatch
        return value
    if origin is tuple:
        (item,) = [a for a in get_args(tp) if a is not Ellipsis]
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        return tuple(convert(item, v, f"{path}[{i}]", meta) for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _Mismatch
        return build(tp, value, path)
    raise TypeError(f"schema: unsupported type {tp!r} at {path}")


def build(cls: type, raw: dict[str, Any] | None, path: str = "") -> Any:
    """Build dataclass ``cls`` from mapping ``raw``; keys missing from ``raw`` take the field defaults."""
    raw = {} if raw is None else raw
    prefix = f"{path}." if path else ""
    if not isinstance(raw, dict):
        raise ConfigError(path, f"expected a mapping, got {_show(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")}
    # YAML keys may use a trailing underscore-free spelling of Python keywords ("lambda" -> lambda_)
    alias = {name.rstrip("_"): name for name in fields}
    for key in raw:
        if not isinstance(key, str) or key not in alias:
            raise ConfigError(f"{prefix}{key}", f"unknown key (valid: {', '.join(sorted(alias))})")
    kwargs = {}
    for key, name in alias.items():
        f = fields[name]
        if key in raw:
            kwargs[name] = convert(hints[name], raw[key], f"{prefix}{key}", dict(f.metadata))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{prefix}{key}", "missing required key")
    try:
        return cls(**kwargs)
    except ConfigError as e:
        if path and not e.field.startswith(path):
            raise ConfigError(f"{prefix}{e.field}" if e.field else path, e.message) from None
        raise


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain dicts/lists, with YAML key spellings (``lambda_`` -> ``lambda``)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name.rstrip("_"): to_dict(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if f.init and not f.name.startswith("_")
        }
    if isinstance(obj, (tuple, list)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
