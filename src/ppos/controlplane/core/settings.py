"""Declarative settings: each field names its flag, environment variable and help.

Sections are dataclasses whose fields carry `setting(...)` metadata; one loader
turns them into argparse flags with environment fallbacks, and the README's
configuration table is generated from the same declarations.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class ConfigError(Exception):
    """Bad configuration; the message says which setting and why."""


class Secret:
    """A secret setting's value, handed out once: after `take()` nothing here holds it.

    Settings travel: the composition root hands them to every service. A secret
    kept in them would reach all of those; taken by the one part that needs it
    (the edge, for the control token), it is held there alone.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value: str | None = value

    def take(self) -> str | None:
        """The value, the first time; None ever after."""
        value, self._value = self._value, None
        return value

    def __repr__(self) -> str:
        return "Secret(<taken>)" if self._value is None else "Secret(<hidden>)"


class Seconds(float):
    """A duration in seconds, written as `250ms`, `30s`, `5m`, `1h` or `2d`."""


def parse_duration(text: str) -> Seconds:
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 250ms, 30s, 5m, 1h")
    return Seconds(float(match.group(1)) * _UNITS[match.group(2)])


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"{text!r} is not a boolean (true/false)")


def parse_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_mapping(text: str) -> dict[str, str]:
    """`a=x,b=y` into {'a': 'x', 'b': 'y'}."""
    result: dict[str, str] = {}
    for item in parse_list(text):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{item!r} is not NAME=VALUE")
        result[key.strip()] = value.strip()
    return result


def setting(
    env: str,
    help: str,
    *,
    default: Any = dataclasses.MISSING,
    default_factory: Callable[[], Any] | None = None,
    flag: str | None = None,
    secret: bool = False,
) -> Any:
    """Declare a setting field. The flag defaults to the field name in kebab case."""
    meta = {"env": env, "help": help, "flag": flag, "secret": secret}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _parser_for(annotation: Any) -> Callable[[str], Any]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        parse = _parser_for(inner[0])
        return lambda text: None if text == "" else parse(text)
    if annotation is Seconds:
        return parse_duration
    if annotation is Secret:
        return Secret
    if annotation is bool:
        return parse_bool
    if annotation is int:
        return int
    if annotation is float:
        return float
    if annotation is Path:
        return lambda text: Path(text).expanduser()
    if origin is list:
        return parse_list
    if origin is dict:
        return parse_mapping
    if annotation is str:
        return str
    raise TypeError(f"no parser for setting type {annotation!r}")


def _fields(section: type[Any]) -> list[tuple[dataclasses.Field[Any], Any]]:
    hints = typing.get_type_hints(section)
    return [(f, hints[f.name]) for f in dataclasses.fields(section) if "env" in f.metadata]


def _flag(field: dataclasses.Field[Any]) -> str:
    return str(field.metadata["flag"] or "--" + field.name.replace("_", "-"))


def add_arguments(parser: argparse.ArgumentParser, section: type[Any]) -> None:
    """Add one flag per setting of `section`; unset flags fall back to env, then default."""
    group = parser.add_argument_group(section.__doc__.splitlines()[0] if section.__doc__ else "")
    for field, _annotation in _fields(section):
        if field.metadata["secret"]:
            continue  # secrets come from the environment or a file, never argv
        group.add_argument(
            _flag(field),
            dest=f"{section.__name__}.{field.name}",
            default=None,
            metavar=field.name.upper(),
            help=f"{field.metadata['help']} [env {field.metadata['env']}]",
        )


def load_section(
    section: type[T], args: argparse.Namespace | None, environ: Mapping[str, str]
) -> T:
    """Build `section` from flags, then environment, then defaults."""
    values: dict[str, Any] = {}
    for field, annotation in _fields(section):
        raw = getattr(args, f"{section.__name__}.{field.name}", None) if args else None
        source = _flag(field)
        if raw is None:
            raw = environ.get(field.metadata["env"])
            source = field.metadata["env"]
        if raw is None:
            continue
        try:
            values[field.name] = _parser_for(annotation)(raw)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return section(**values)


def secret_variables(sections: list[type[Any]]) -> list[str]:
    """The environment variables of the secret settings of `sections`."""
    return [
        str(field.metadata["env"])
        for section in sections
        for field, _annotation in _fields(section)
        if field.metadata["secret"]
    ]


def markdown_table(sections: list[type[Any]]) -> str:
    """The README's configuration table."""
    rows = ["| Flag | Environment | Default | Meaning |", "|---|---|---|---|"]
    for section in sections:
        for field, _annotation in _fields(section):
            flag = "(env only)" if field.metadata["secret"] else f"`{_flag(field)}`"
            if field.default is not dataclasses.MISSING:
                default = field.default
            elif field.default_factory is not dataclasses.MISSING:
                default = field.default_factory()
            else:
                default = "(required)"
            shown = "" if default in (None, "", [], {}) else f"`{_render(default)}`"
            rows.append(
                f"| {flag} | `{field.metadata['env']}` | {shown} | {field.metadata['help']} |"
            )
    return "\n".join(rows) + "\n"


def _render(value: Any) -> str:
    if isinstance(value, Path):
        home = str(Path.home())
        text = str(value)
        return "~" + text[len(home) :] if text.startswith(home + "/") else text
    if isinstance(value, Seconds):
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
            if value >= size and value % size == 0:
                return f"{value / size:g}{unit}"
        return f"{value * 1000:g}ms"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def environ() -> Mapping[str, str]:
    return os.environ
