"""Verify one received record: its envelope parses and holds, its digest matches.

Nothing here looks inside the canonical payload: it is the engine's truth,
whatever its bytes are. What is checked is what the sync relies on: the key
(job id, revision), the region, the cursor, the size and the SHA-256.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from ppos.preflight.v1 import job_pb2

JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
INT64_MAX = (1 << 63) - 1

# Quarantine reasons.
INVALID_ENVELOPE = "INVALID_ENVELOPE"
REGION_MISMATCH = "REGION_MISMATCH"
DIGEST_MISMATCH = "DIGEST_MISMATCH"
PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
REVISION_CONFLICT = "REVISION_CONFLICT"


@dataclass(slots=True)
class Accepted:
    """A verified record, ready to store."""

    raw: bytes
    job_id: str
    revision: int
    tenant_id: str
    queue_id: str
    status: str
    governance_state: str
    node_id: str
    container_image: str
    create_time_ns: int | None
    update_time_ns: int | None
    payload: bytes
    digest: bytes
    cursor: str
    # Its row's bytes encoded ahead of the page's transaction (prepared_rows.py).
    prepared: object = None

    @property
    def key(self) -> tuple[str, int]:
        return (self.job_id, self.revision)


@dataclass(frozen=True)
class Rejected:
    """A record to quarantine, with what could be read of it."""

    raw: bytes
    reason: str
    detail: str
    job_id: str = ""
    revision: int = 0
    cursor: str = ""


def enum_text(kind: Any, value: int) -> str:
    """The enum name (`kind` is a generated enum), or the number for a value this build lacks."""
    try:
        return str(kind.Name(value))
    except ValueError:
        return str(value)


_STATUS_NAMES = {v: k for k, v in job_pb2.JobStatus.items()}
_STATE_NAMES = {v: k for k, v in job_pb2.GovernanceState.items()}


def enum_value(kind: Any, text: str) -> int:
    if text.lstrip("-").isdigit():
        return int(text)
    return int(kind.Value(text))


def _nanos(record: job_pb2.JobRecord, field: str, problems: list[str]) -> int | None:
    if not record.HasField(field):  # type: ignore[arg-type]
        return None
    stamp = getattr(record, field)
    seconds, nanos = stamp.seconds, stamp.nanos
    if not 0 <= nanos < 1_000_000_000:
        problems.append(f"{field}: nanos out of range")
        return None
    value = seconds * 1_000_000_000 + nanos
    if not -INT64_MAX <= value <= INT64_MAX:
        problems.append(f"{field}: outside the years 1678 to 2262")
        return None
    return int(value)


def verify(raw: bytes, *, region: str, max_payload_bytes: int) -> Accepted | Rejected:
    """One record's verdict. Each field is read once (this runs for every record)."""
    # One function, not several: it runs for every synced record, and calls cost there.
    try:
        record = job_pb2.JobRecord.FromString(raw)
    except DecodeError as exc:
        return Rejected(raw, INVALID_ENVELOPE, f"not a JobRecord: {exc}")
    job_id = record.job_id
    revision = record.revision
    cursor = record.cursor
    digest = record.canonical_payload_sha256
    tenant_id, queue_id = record.tenant_id, record.queue_id
    node_id, container_image = record.node_id, record.container_image
    problems: list[str] = []
    if not JOB_ID.fullmatch(job_id):
        problems.append(
            f"job_id: must be 1 to 128 letters, digits, '_', '.', ':' or '-' (got {job_id[:40]!r})"
        )
    if revision < 1:
        problems.append(f"revision: must be at least 1 (got {revision})")
    if not cursor:
        problems.append("cursor: is required")
    if len(digest) != 32:
        problems.append(f"canonical_payload_sha256: must be 32 bytes (got {len(digest)})")
    for field, value, limit in (
        ("tenant_id", tenant_id, 128),
        ("queue_id", queue_id, 128),
        ("node_id", node_id, 128),
        ("container_image", container_image, 512),
    ):
        if len(value) > limit:
            problems.append(f"{field}: longer than {limit} characters")
    create_ns = _nanos(record, "create_time", problems)
    update_ns = _nanos(record, "update_time", problems)
    if problems:
        return Rejected(raw, INVALID_ENVELOPE, "; ".join(problems), job_id[:128], revision, cursor)
    if record.region != region:
        detail = f"record of region {record.region[:64]!r} in the feed of {region!r}"
        return Rejected(raw, REGION_MISMATCH, detail, job_id, revision, cursor)
    payload = record.canonical_payload
    if len(payload) > max_payload_bytes:
        detail = f"canonical payload of {len(payload)} bytes exceeds {max_payload_bytes}"
        return Rejected(raw, PAYLOAD_TOO_LARGE, detail, job_id, revision, cursor)
    actual = hashlib.sha256(payload).digest()
    if actual != digest:
        detail = (
            f"SHA-256 of the canonical payload is {actual.hex()}, the record says {digest.hex()}"
        )
        return Rejected(raw, DIGEST_MISMATCH, detail, job_id, revision, cursor)
    status = _STATUS_NAMES.get(record.status) or enum_text(job_pb2.JobStatus, record.status)
    state = _STATE_NAMES.get(record.governance_state) or enum_text(
        job_pb2.GovernanceState, record.governance_state
    )
    return Accepted(
        raw,
        job_id,
        revision,
        tenant_id,
        queue_id,
        status,
        state,
        node_id,
        container_image,
        create_ns,
        update_ns,
        payload,
        digest,
        cursor,
    )
