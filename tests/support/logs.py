"""Reading logs in tests: structlog's capture_logs with the per-call contextvars merged.

No redaction runs here on purpose: what is captured is what the code tried to log.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from structlog.testing import capture_logs

from ppos.controlplane.core.logging import merge_call_fields


@contextmanager
def captured() -> Iterator[list[dict[str, Any]]]:
    processors = [structlog.contextvars.merge_contextvars, merge_call_fields]
    with capture_logs(processors=processors) as logs:
        yield logs
