"""Template filters: protobuf values as text people read."""

from __future__ import annotations

import datetime as dt
import re

from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.message import Message
from markupsafe import Markup, escape

_SUSPECT = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def timestamp(value: timestamp_pb2.Timestamp | None) -> str:
    if value is None or (value.seconds == 0 and value.nanos == 0):
        return "—"
    moment = value.ToDatetime(tzinfo=dt.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def epoch(value: float) -> str:
    """Seconds since the epoch (the portal's own clock) as an ISO time."""
    moment = dt.datetime.fromtimestamp(value, tz=dt.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def duration(value: duration_pb2.Duration | None) -> str:
    if value is None:
        return "—"
    seconds = value.seconds + value.nanos / 1e9
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def enum_name(value: str, prefix: str) -> str:
    """`READINESS_NOT_READY` -> `NOT_READY`."""
    return value.removeprefix(prefix)


def inert(value: object, limit: int = 2000) -> Markup:
    """Text typed by someone or sent by a registry: escaped, control and bidi characters
    shown as `\\uXXXX` (so none can reorder or hide the text around it), and cut at
    `limit` characters with a note."""
    text = str(value)
    cut = len(text) > limit
    text = text[:limit]
    shown = _SUSPECT.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    html = str(escape(shown))
    if cut:
        html += f' <span class="note">(cut at {limit} characters)</span>'
    return Markup(html)  # noqa: S704 - escaped above


def enum_field(message: Message, field: str) -> str:
    """The name of an enum field's value, without the enum's prefix:
    `node.status|enumof("readiness")` -> `NOT_READY`."""
    descriptor = message.DESCRIPTOR.fields_by_name[field].enum_type
    value = getattr(message, field)
    if descriptor is None:
        return str(value)
    known = descriptor.values_by_number.get(value)
    if known is None:
        return str(value)
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", descriptor.name).upper() + "_"
    return known.name.removeprefix(prefix)
