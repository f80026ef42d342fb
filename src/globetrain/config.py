"""Typed, sectioned configuration.

Each part of globetrain declares its settings as a frozen dataclass deriving from
``ConfigSection`` (one section per concern: model, data, compression, sync, fleet,
network...). Fields carry a docstring-like ``help`` in their metadata, choices are
``Literal[...]`` types, and ``__post_init__`` validates values with errors that print
the offending value. Sections round-trip through plain dicts (JSON), so the fully
resolved config can be saved into every checkpoint and run log.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from globetrain.errors import ConfigError

SectionT = TypeVar("SectionT", bound="ConfigSection")


def field(default: Any = dataclasses.MISSING, *, help: str, **kwargs: Any) -> Any:  # noqa: A002
    """A dataclass field with a one-line description (shown by ``describe``)."""
    metadata = {"help": help}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=metadata, **kwargs)
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def require(condition: bool, section: str, name: str, value: Any, expectation: str) -> None:
    """Raise ``ConfigError`` naming ``section.name`` and its value unless ``condition``."""
    if not condition:
        raise ConfigError(f"{section}.{name} = {value!r} is invalid: expected {expectation}")


def require_finite_positive(section: str, name: str, value: float) -> None:
    require(
        isinstance(value, (int, float)) and math.isfinite(value) and value > 0,
        section,
        name,
        value,
        "a finite number > 0",
    )


class ConfigSection:
    """Mixin for frozen dataclass config sections."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for item in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, item.name)
            if isinstance(value, ConfigSection):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[item.name] = value
        return out

    @classmethod
    def from_dict(cls: type[SectionT], data: Mapping[str, Any] | None) -> SectionT:
        """Build a section from a dict, refusing unknown keys and values of the wrong type."""
        data = dict(data or {})
        hints = get_type_hints(cls)
        known = {item.name for item in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"{cls.__name__}: unknown setting(s) {unknown}; known settings are {sorted(known)}"
            )
        kwargs = {}
        for name, value in data.items():
            kwargs[name] = _coerce(hints[name], value, f"{cls.__name__}.{name}")
        return cls(**kwargs)

    def replace(self: SectionT, **changes: Any) -> SectionT:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """(name, default, help) for every field: used by ``--help`` texts and docs."""
        rows = []
        for item in dataclasses.fields(cls):  # type: ignore[arg-type]
            if item.default is not dataclasses.MISSING:
                default = repr(item.default)
            elif item.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                default = repr(item.default_factory())  # type: ignore[misc]
            else:
                default = "(required)"
            rows.append((item.name, default, item.metadata.get("help", "")))
        return rows


def _coerce(annotation: Any, value: Any, where: str) -> Any:
    """Check (and gently convert, e.g. int -> float, list -> tuple) a value from JSON."""
    origin = get_origin(annotation)
    if annotation is Any:
        return value
    if origin is Literal:
        allowed = get_args(annotation)
        if value not in allowed:
            raise ConfigError(f"{where} = {value!r} is invalid: expected one of {list(allowed)}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{where} = {value!r} is invalid")
    if isinstance(annotation, type) and issubclass(annotation, ConfigSection):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} = {value!r} is invalid: expected a mapping of settings")
        return annotation.from_dict(value)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} = {value!r} is invalid: expected a list")
        args = get_args(annotation)
        item_type = args[0] if args else Any
        items = [_coerce(item_type, item, where) for item in value]
        return tuple(items) if origin is tuple else items
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} = {value!r} is invalid: expected a number")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} = {value!r} is invalid: expected an integer")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} = {value!r} is invalid: expected true or false")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} = {value!r} is invalid: expected a string")
        return value
    return value
