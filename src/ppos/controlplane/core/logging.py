"""structlog set-up: configured once by the composition root, never at import.

JSON lines off a TTY, a console renderer on one. Per-call fields (request id,
method, caller) come from contextvars: the edge sets them once per call with
`bind_call_fields` (one ContextVar; each RPC runs in its own task, so nothing
needs unbinding), other code may use structlog's `bind_contextvars`. A
redaction processor runs last before rendering: it blanks values under
secret-looking keys and scrubs every registered secret value (the control
token) from all strings, exception text included.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, TextIO

import structlog

REDACTED = "[REDACTED]"
_SECRET_KEY = re.compile(
    r"(token|secret|password|passwd|authorization|credential|jwt|private|api[_-]?key)", re.I
)
# The characters of a bearer token (RFC 6750 b64token), the shape of the control
# token; a secret of other characters is looked for anywhere.
_BEARER_CHARS = r"[A-Za-z0-9._~+/=-]"
_BEARER_RUN = re.compile(f"{_BEARER_CHARS}+")
_ANY_SHAPE = r"(?s:.)"
# Keys that look secret by name but hold no secret.
_SAFE_KEYS = frozenset({"token_kind", "credential_kind", "active_kid", "kid"})


_call_fields: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "ppos_call_log_fields", default=None
)


def bind_call_fields(fields: Mapping[str, str]) -> None:
    """The fields every log line of the current call (its task) carries."""
    _call_fields.set(fields)


def merge_call_fields(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: add the current call's fields (explicit keys win)."""
    fields = _call_fields.get()
    if fields:
        for key, value in fields.items():
            event_dict.setdefault(key, value)
    return event_dict


class SecretRegistry:
    """Secret values that must never be printed, whatever key carries them.

    The registry keeps no secret: only each one's length and a BLAKE2b digest
    under a key drawn at random when the registry is made (the process that logs
    must not hold the control token it redacts). `scrub` hashes every stretch of
    that length inside the runs of secret-shaped characters of a text and blanks
    the stretches whose digest is a secret's.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._key = os.urandom(32)
        self._digests: frozenset[bytes] = frozenset()
        self._lengths: tuple[int, ...] = ()
        self._runs: re.Pattern[str] | None = None
        self._shapes: tuple[str, ...] = ()
        for secret in secrets:
            self.add(secret)

    def _digest(self, text: str) -> bytes:
        return hashlib.blake2b(
            text.encode("utf-8", "surrogatepass"), key=self._key, digest_size=32
        ).digest()

    def add(self, secret: str) -> None:
        if len(secret) < 8:  # too short to scrub without mangling ordinary text
            return
        shape = _BEARER_CHARS if _BEARER_RUN.fullmatch(secret) else _ANY_SHAPE
        with self._lock:
            self._digests = self._digests | {self._digest(secret)}
            self._lengths = tuple(sorted({*self._lengths, len(secret)}))
            self._shapes = tuple(sorted({*self._shapes, shape}))
            # Runs of the characters any secret may be made of, long enough to hold one.
            self._runs = re.compile(f"(?:{'|'.join(self._shapes)}){{{self._lengths[0]},}}")

    def scrub(self, text: str) -> str:
        runs = self._runs
        if runs is None:
            return text
        spans: list[tuple[int, int]] = []
        for run in runs.finditer(text):
            spans += self._secrets_in(text, run.start(), run.end())
        if not spans:
            return text
        parts, last = [], 0
        for start, end in spans:
            parts += [text[last:start], REDACTED]
            last = end
        return "".join([*parts, text[last:]])

    def _secrets_in(self, text: str, start: int, end: int) -> list[tuple[int, int]]:
        """The spans within text[start:end] whose digest is a registered secret's."""
        found: list[tuple[int, int]] = []
        at = start
        while at < end:
            for length in self._lengths:
                if at + length <= end and self._digest(text[at : at + length]) in self._digests:
                    found.append((at, at + length))
                    at += length
                    break
            else:
                at += 1
        return found


class RedactSecrets:
    """structlog processor: blank secret-named keys, scrub secret values."""

    def __init__(self, registry: SecretRegistry) -> None:
        self._registry = registry

    def __call__(
        self, _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            event_dict[key] = self._clean(key, event_dict[key])
        return event_dict

    def _clean(self, key: str, value: Any) -> Any:
        if key not in _SAFE_KEYS and _SECRET_KEY.search(key) and value not in (None, "", 0):
            return REDACTED
        if isinstance(value, str):
            return self._registry.scrub(value)
        if isinstance(value, bytes):
            return self._registry.scrub(value.decode("utf-8", "replace"))
        if isinstance(value, dict):
            return {k: self._clean(str(k), v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._clean("", v) for v in value]
        return value


def configure_logging(
    *,
    level: str = "info",
    fmt: str = "auto",
    stream: TextIO | None = None,
    secrets: SecretRegistry | None = None,
) -> SecretRegistry:
    """Configure structlog (and stdlib logging through it). Returns the registry."""
    stream = stream or sys.stderr
    registry = secrets or SecretRegistry()
    as_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if as_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        merge_call_fields,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    # Exceptions become text before redaction so their messages are scrubbed too.
    processors += [structlog.processors.format_exc_info, RedactSecrets(registry), renderer]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Route stdlib logging (grpc, alembic, sqlalchemy warnings) through the
    # same redaction and renderer.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                RedactSecrets(registry),
                renderer,
            ],
            foreign_pre_chain=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO))
    # Migration chatter ("setup plugin ...", "Running upgrade ...") only when debugging.
    logging.getLogger("alembic").setLevel(
        logging.DEBUG if numeric <= logging.DEBUG else logging.WARNING
    )
    return registry


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
