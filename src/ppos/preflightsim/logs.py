"""The simulator's logging: structlog, set up once by `main`, never at import.

JSON lines when stderr is not a terminal (what the tests and the demo read),
a console renderer on one. The simulator handles no secret of the control
plane's (it never receives the control token), so it needs no redaction:
what it logs is faults, feeds and start-up.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

import structlog


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging (grpc's) to `stream` (stderr) at `level`."""
    stream = stream or sys.stderr
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=True)
        if stream.isatty()
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(stream=stream, level=max(numeric, logging.INFO), force=True)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


def private_opener(path: str, flags: int) -> int:
    """`open(..., opener=private_opener)`: a file it creates is readable by its owner
    only (call logs hold live tokens and commands)."""
    return os.open(path, flags, 0o600)
