"""The simulator's record files: JSON Lines, one engine output per line, byte-exact.

Each line is one JSON object, an envelope around one engine output:

    {"jobId": "job_1779116602472_1d246", "tenantId": "acme-print",
     "queueId": "eu-offset", "revision": 1, "status": "COMPLETED",
     "governanceState": "COMPLETED_WITH_FINDINGS", "nodeId": "node_...",
     "containerImage": "registry.example/preflight-engine:15.1.2",
     "createTime": "2026-05-18T12:23:22.472Z", "updateTime": "...",
     "canonicalPayload": {...the engine's output, exactly as it wrote it...}}

The payload is carried in one of two ways, exactly one per line:

- `canonicalPayload`: the engine's JSON written raw into the line. Its bytes
  are sliced out of the line, never decoded and re-encoded, so big integers,
  `1e400`, `0.1`, escapes, duplicate keys, key order and whitespace (other
  than newlines, which JSON Lines cannot hold) survive byte for byte.
- `canonicalPayloadBase64`: standard base64 of the exact bytes, for outputs
  that a JSON line cannot hold raw: line breaks, a byte order mark, invalid
  UTF-8, or anything that is not JSON at all.

`canonicalPayloadSha256` (hex) is optional; when present the file is refused
if it does not match. `status` and `governanceState` take the enum names with
or without their prefix (`COMPLETED` or `JOB_STATUS_COMPLETED`). Blank lines
and lines starting with `//` are skipped. Any other key is an error (typos
must not pass silently).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import timestamp_pb2

from ppos.preflight.v1 import job_pb2
from ppos.preflightsim.jsonspan import SpanError, member_spans

KNOWN_KEYS = frozenset(
    {
        "jobId",
        "tenantId",
        "queueId",
        "revision",
        "status",
        "governanceState",
        "nodeId",
        "containerImage",
        "createTime",
        "updateTime",
        "canonicalPayload",
        "canonicalPayloadBase64",
        "canonicalPayloadSha256",
    }
)


class RecordFileError(ValueError):
    """A line of a record file is not a valid envelope; says which and why."""


@dataclass(frozen=True)
class SourceRecord:
    """One line of a record file: the envelope fields and the exact payload bytes."""

    job_id: str
    tenant_id: str
    queue_id: str
    revision: int
    status: int
    governance_state: int
    node_id: str
    container_image: str
    create_time: dt.datetime | None
    update_time: dt.datetime | None
    payload: bytes

    def to_proto(self, *, region: str, cursor: str) -> job_pb2.JobRecord:
        record = job_pb2.JobRecord(
            job_id=self.job_id,
            region=region,
            tenant_id=self.tenant_id,
            queue_id=self.queue_id,
            revision=self.revision,
            status=self.status,  # type: ignore[arg-type]
            governance_state=self.governance_state,  # type: ignore[arg-type]
            node_id=self.node_id,
            container_image=self.container_image,
            canonical_payload=self.payload,
            canonical_payload_sha256=hashlib.sha256(self.payload).digest(),
            cursor=cursor,
        )
        if self.create_time is not None:
            record.create_time.CopyFrom(_timestamp(self.create_time))
        if self.update_time is not None:
            record.update_time.CopyFrom(_timestamp(self.update_time))
        return record


def _timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _enum(kind: Any, prefix: str, value: Any, field: str) -> int:
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value  # a number the enum may not know: kept as is
    if not isinstance(value, str):
        raise RecordFileError(f"{field}: must be a name or a number")
    name = value if value.startswith(prefix) else prefix + value
    try:
        return int(kind.Value(name))
    except ValueError:
        raise RecordFileError(f"{field}: unknown value {value!r}") from None


def _time(value: Any, field: str) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise RecordFileError(f"{field}: must be an RFC 3339 string")
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise RecordFileError(f"{field}: {value!r} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise RecordFileError(f"{field}: needs a zone (Z or +hh:mm)")
    return parsed.astimezone(dt.UTC)


def _text(envelope: dict[str, Any], key: str, *, required: bool = False) -> str:
    value = envelope.get(key, "")
    if not isinstance(value, str):
        raise RecordFileError(f"{key}: must be a string")
    if required and not value:
        raise RecordFileError(f"{key}: is required")
    return value


def parse_line(line: bytes) -> SourceRecord:
    """One envelope line (without its line break) into a record."""
    try:
        envelope = json.loads(line)
        spans = member_spans(line)
    except (ValueError, SpanError) as exc:
        raise RecordFileError(f"not a JSON object: {exc}") from None
    if not isinstance(envelope, dict):
        raise RecordFileError("not a JSON object")
    unknown = sorted(set(envelope) - KNOWN_KEYS)
    if unknown:
        raise RecordFileError(f"unknown keys {unknown}")
    if ("canonicalPayload" in spans) == ("canonicalPayloadBase64" in spans):
        raise RecordFileError("give exactly one of canonicalPayload and canonicalPayloadBase64")
    if "canonicalPayload" in spans:
        start, end = spans["canonicalPayload"]
        payload = line[start:end]
    else:
        encoded = envelope["canonicalPayloadBase64"]
        if not isinstance(encoded, str):
            raise RecordFileError("canonicalPayloadBase64: must be a string")
        try:
            payload = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise RecordFileError("canonicalPayloadBase64: not valid base64") from None
    expected = envelope.get("canonicalPayloadSha256")
    if expected is not None and expected != hashlib.sha256(payload).hexdigest():
        raise RecordFileError("canonicalPayloadSha256 does not match the payload")
    revision = envelope.get("revision", 1)
    if not isinstance(revision, int) or isinstance(revision, bool):
        raise RecordFileError("revision: must be an integer")
    return SourceRecord(
        job_id=_text(envelope, "jobId", required=True),
        tenant_id=_text(envelope, "tenantId"),
        queue_id=_text(envelope, "queueId"),
        revision=revision,
        status=_enum(job_pb2.JobStatus, "JOB_STATUS_", envelope.get("status"), "status"),
        governance_state=_enum(
            job_pb2.GovernanceState,
            "GOVERNANCE_STATE_",
            envelope.get("governanceState"),
            "governanceState",
        ),
        node_id=_text(envelope, "nodeId"),
        container_image=_text(envelope, "containerImage"),
        create_time=_time(envelope.get("createTime"), "createTime"),
        update_time=_time(envelope.get("updateTime"), "updateTime"),
        payload=payload,
    )


def iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, line without its break) of every record line of a file."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip(b"\r\n") if raw.endswith(b"\n") else raw
            if not line.strip() or line.lstrip().startswith(b"//"):
                continue
            yield number, line


def read_file(path: Path) -> list[SourceRecord]:
    records = []
    for number, line in iter_lines(path):
        try:
            records.append(parse_line(line))
        except RecordFileError as exc:
            raise RecordFileError(f"{path}:{number}: {exc}") from None
    return records


def format_line(record: SourceRecord, *, raw: bool | None = None) -> bytes:
    """The envelope line of `record` (raw payload when it can be, else base64)."""
    envelope: dict[str, Any] = {
        "jobId": record.job_id,
        "tenantId": record.tenant_id,
        "queueId": record.queue_id,
        "revision": record.revision,
        "status": _enum_name(job_pb2.JobStatus, "JOB_STATUS_", record.status),
        "governanceState": _enum_name(
            job_pb2.GovernanceState, "GOVERNANCE_STATE_", record.governance_state
        ),
        "nodeId": record.node_id,
        "containerImage": record.container_image,
    }
    for key, value in (("createTime", record.create_time), ("updateTime", record.update_time)):
        if value is not None:
            envelope[key] = value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    envelope["canonicalPayloadSha256"] = hashlib.sha256(record.payload).hexdigest()
    head = json.dumps(envelope, separators=(", ", ": "), ensure_ascii=False).encode()[:-1]
    use_raw = _fits_raw(record.payload) if raw is None else raw
    if use_raw:
        return head + b', "canonicalPayload": ' + record.payload + b"}"
    encoded = base64.b64encode(record.payload).decode()
    return head + f', "canonicalPayloadBase64": "{encoded}"}}'.encode()


def _fits_raw(payload: bytes) -> bool:
    if b"\n" in payload or b"\r" in payload or payload != payload.strip(b" \t"):
        return False
    try:
        json.loads(payload)
        member_spans(b'{"p": ' + payload + b"}")
    except (ValueError, SpanError):
        return False
    return True


def _enum_name(kind: Any, prefix: str, value: int) -> str | int:
    try:
        return str(kind.Name(value)).removeprefix(prefix)
    except ValueError:
        return value
