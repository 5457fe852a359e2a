"""Build frozen dataclasses from parsed YAML, with one-line errors that name the dotted field.

A dataclass field's type hint says what is accepted (``int``, ``float``, ``bool``, ``str``, ``Literal[...]``,
``X | None``, ``tuple[X, ...]``, a nested dataclass, or a union of those); ``field(metadata=...)`` adds numeric bounds
(``ge``, ``gt``, ``le``, ``lt``) and, for strings, a ``pattern`` and a ``max_length``. Unknown keys, missing required
keys, wrong types and out-of-range values raise ``ConfigError`` naming the field, e.g.
``unlearning.lambda: expected float > 0, got -1``.

Numbers are strict: a float must be finite (no ``.inf``, ``.nan``, ``1e400``), numeric text for a float field is
plain decimal (``1e-3`` yes, ``0_5`` or ``Infinity`` no), an int lies within the int64 range, and a YAML scalar that
YAML 1.1 reads in a surprising way (``010`` as octal 8, ``1:02`` as 62, ``1_000``) arrives as an ``UnsafeNumber`` that
every field refuses. Shown values are cut to ``SHOW_LIMIT`` characters, so an error stays one short line.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

# plain decimal numeric text, as a float field accepts it from a string ("1e-3", "0.5", "-2"; not "0_5", "Infinity")
_FLOAT_TEXT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


SHOW_LIMIT = 80  # characters of a value shown in an error
INT_MAX = 2**63 - 1  # ints beyond int64 would overflow numpy and torch later


class ConfigError(ValueError):
    """A scenario (or a method's hyperparameter block) is invalid. ``str(err)`` is one line: file, field, problem."""

    def __init__(self, field: str, message: str, file: str | None = None) -> None:
        self.field, self.message, self.file = field, message, file
        super().__init__(self._text())

    def _text(self) -> str:
        parts = [p for p in (self.file, self.field) if p]
        # one line whatever the parts hold; a message is never allowed to grow without bound
        return _one_line(": ".join(parts + [self.message]), 1000)

    def with_file(self, file: str) -> ConfigError:
        """The same error, reported for ``file``."""
        return ConfigError(self.field, self.message, file)

    def __str__(self) -> str:
        return self._text()


def bounds(**kw: Any) -> dict[str, Any]:
    """Metadata for a numeric field: ``bounds(gt=0)``, ``bounds(ge=0, lt=1)``."""
    return kw


def _one_line(text: str, limit: int) -> str:
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class UnsafeNumber:
    """A YAML scalar that YAML 1.1 reads as a number other than the one it looks like (``010`` is octal 8, ``1:02``
    is 62, ``1_000`` drops its separators), or one too long to read at all. Every schema type refuses it with
    ``problem``; it never reaches a built dataclass.
    """

    text: str
    problem: str

    def __str__(self) -> str:
        return self.text


def show(value: Any) -> str:
    """A value as an error message shows it: YAML spelling, cut to about ``SHOW_LIMIT`` characters."""
    if isinstance(value, str):
        if len(value) <= SHOW_LIMIT:
            return _one_line(repr(value), SHOW_LIMIT + 20)
        head = repr(value[:SHOW_LIMIT])
        return f"{head[:-1]}...{head[-1]} ({len(value)} characters)"
    if isinstance(value, UnsafeNumber):
        return _one_line(value.text, SHOW_LIMIT)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, int) and value.bit_length() > 200:  # str() of a 5,000-digit int even raises
        return f"a {int(value.bit_length() * 0.30103) + 1}-digit int"
    if isinstance(value, float) and value != value:
        return "nan"
    return _one_line(str(value), SHOW_LIMIT)


_show = show


def cut(text: str, limit: int = SHOW_LIMIT) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    return _one_line(text, limit)


def show_key(key: Any) -> str:
    """A mapping key as a field path shows it: plain when it is a short ordinary name, else quoted and cut."""
    if isinstance(key, str) and re.fullmatch(rf"[A-Za-z0-9_.-]{{1,{SHOW_LIMIT}}}", key):
        return key
    return show(key)


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
    if isinstance(value, UnsafeNumber):
        raise ConfigError(path, value.problem)
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
        if abs(value) > INT_MAX:
            raise ConfigError(path, f"expected {_describe(tp, meta)}, got {show(value)} (beyond the int64 range)")
        if not _check_range(value, meta):
            raise _Mismatch
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string; accept plain decimal numeric text
            if not _FLOAT_TEXT.fullmatch(value.strip()):
                raise _Mismatch
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Mismatch
        shown = show(value)
        try:
            value = float(value)
        except OverflowError:  # an int too large for a float
            value = math.inf
        if not math.isfinite(value):
            raise ConfigError(path, f"expected {_describe(tp, meta)}, got {shown} (not a finite number)")
        if not _check_range(value, meta):
            raise _Mismatch
        return value
    if tp is str:
        if not isinstance(value, str):
            raise _Mismatch
        limit = meta.get("max_length")
        if limit is not None and len(value) > limit:
            count = f" ({len(value)} characters)" if len(value) <= SHOW_LIMIT else ""
            raise ConfigError(path, f"expected at most {limit} characters, got {show(value)}{count}")
        if "pattern" in meta and not re.fullmatch(meta["pattern"], value):
            raise ConfigError(path, f"expected a string matching {meta['pattern']}, got {show(value)}")
        return str(value)
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
            raise ConfigError(f"{prefix}{show_key(key)}", f"unknown key (valid: {', '.join(sorted(alias))})")
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
