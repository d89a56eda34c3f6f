"""The per-region hash chains of synced and quarantined rows, extended in the page's transaction.

Each region has two chains, one over its synced revisions and one over its
quarantined records. A row's `chain` is `SHA-256(previous chain || encoding
of every stored field)`: its position in the region's chain, its sync
sequence (drawn here, so the link can cover it), its key, its diagnostic
fields, its payload's SHA-256 and size, cursor, sweep and time. The payload is
covered through its digest; verification can check the digest against the bytes.

Two encodings exist, and each row says which one its link uses
(`chain_version`); a chain may hold both, the older rows first:

- v1 (rows chained before registrysync_0003): core/hashchain.py, a type tag
  and a length for each value, in `fields` order;
- v2 (every row chained since): PostgreSQL's binary record format of the
  columns `columns_v2` (core/pgrecord.py), which the server computes itself
  when it verifies, after the kind's domain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from ppos.controlplane.core import hashchain, pgrecord
from ppos.controlplane.core.pgrecord import BYTEA, INT8, TEXT, TIMESTAMPTZ

SYNCED_DOMAIN = b"ppos.registrysync.synced_jobs.v1"
QUARANTINE_DOMAIN = b"ppos.registrysync.sync_quarantine.v1"
SYNCED_FIELDS = (
    "chain_position",
    "sync_sequence",
    "region",
    "job_id",
    "revision",
    "tenant_id",
    "queue_id",
    "status",
    "governance_state",
    "node_id",
    "container_image",
    "create_time_ns",
    "update_time_ns",
    "canonical_payload_sha256",
    "payload_size",
    "source_cursor",
    "sweep_id",
    "synced_at",
)
# v2: fixed-size columns first, then the variable ones (the order is the encoding's).
SYNCED_DOMAIN_V2 = b"ppos.registrysync.synced_jobs.v2"
QUARANTINE_DOMAIN_V2 = b"ppos.registrysync.sync_quarantine.v2"
SYNCED_COLUMNS_V2 = (
    ("chain_position", INT8),
    ("sync_sequence", INT8),
    ("revision", INT8),
    ("payload_size", INT8),
    ("create_time_ns", INT8),
    ("update_time_ns", INT8),
    ("synced_at", TIMESTAMPTZ),
    ("region", TEXT),
    ("job_id", TEXT),
    ("tenant_id", TEXT),
    ("queue_id", TEXT),
    ("status", TEXT),
    ("governance_state", TEXT),
    ("node_id", TEXT),
    ("container_image", TEXT),
    ("canonical_payload_sha256", BYTEA),
    ("source_cursor", TEXT),
    ("sweep_id", TEXT),
)
QUARANTINE_COLUMNS_V2 = (
    ("chain_position", INT8),
    ("quarantine_id", INT8),
    ("revision", INT8),
    ("quarantined_at", TIMESTAMPTZ),
    ("region", TEXT),
    ("job_id", TEXT),
    ("reason", TEXT),
    ("detail", TEXT),
    ("raw_record_sha256", BYTEA),
    ("source_cursor", TEXT),
    ("sweep_id", TEXT),
)
V1 = 1
V2 = 2
DIGEST = "canonical_payload_sha256"
QUARANTINE_FIELDS = (
    "chain_position",
    "quarantine_id",
    "region",
    "job_id",
    "revision",
    "reason",
    "detail",
    "raw_record_sha256",
    "source_cursor",
    "sweep_id",
    "quarantined_at",
)


@dataclass(frozen=True)
class ChainKind:
    table: str
    id_column: str
    domain: bytes
    fields: tuple[str, ...]
    domain_v2: bytes
    columns_v2: tuple[tuple[str, int], ...]

    @property
    def names_v2(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns_v2)

    @property
    def oids_v2(self) -> tuple[int, ...]:
        return tuple(oid for _, oid in self.columns_v2)

    @property
    def prefix_v2(self) -> bytes:
        """What precedes the record in a v2 link: the domain, length-prefixed as in v1."""
        return hashchain.encode(self.domain_v2, ())


SYNCED = ChainKind(
    "synced_jobs",
    "sync_sequence",
    SYNCED_DOMAIN,
    SYNCED_FIELDS,
    SYNCED_DOMAIN_V2,
    SYNCED_COLUMNS_V2,
)
QUARANTINE = ChainKind(
    "sync_quarantine",
    "quarantine_id",
    QUARANTINE_DOMAIN,
    QUARANTINE_FIELDS,
    QUARANTINE_DOMAIN_V2,
    QUARANTINE_COLUMNS_V2,
)


def encoding(kind: ChainKind, version: object, row: Mapping[str, object]) -> bytes:
    """What follows the previous link in the row's own link: `SHA-256(previous || this)`."""
    if version == V2:
        parts = pgrecord.segments(kind.oids_v2, [row[name] for name in kind.names_v2])
        return kind.prefix_v2 + pgrecord.encode(parts)
    return hashchain.encode(kind.domain, [row[name] for name in kind.fields])  # type: ignore[misc]


def changed_fields(kind: ChainKind, version: object, row: Mapping[str, object]) -> list[str]:
    """The fields whose stored per-field checks no longer match (forensics, not proof)."""
    checks = row.get("chain_checks")
    held = bytes(checks) if isinstance(checks, bytes | bytearray | memoryview) else b""
    if version == V2:
        parts = pgrecord.segments(kind.oids_v2, [row[name] for name in kind.names_v2])
        return pgrecord.changed_fields(kind.names_v2, parts, held)
    values = [row[name] for name in kind.fields]
    return hashchain.changed_fields(kind.fields, values, held)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Tip:
    """The end of a region's chain: rows in it, the newest row's id and link."""

    position: int = 0
    row_id: int = 0
    chain: bytes = hashchain.GENESIS


def tip(session: Session, kind: ChainKind, region: str) -> Tip:
    row = session.execute(
        text(
            f"SELECT chain_position, {kind.id_column}, chain FROM {kind.table} "
            f"WHERE region = :region ORDER BY {kind.id_column} DESC LIMIT 1"
        ),
        {"region": region},
    ).first()
    if row is None:
        return Tip()
    return Tip(int(row[0]), int(row[1]), bytes(row[2]))


def draw_ids(session: Session, kind: ChainKind, count: int, *, postgres: bool) -> list[int]:
    """`count` new row ids, in order (the caller holds the sequence lock, or SQLite's writer).

    On PostgreSQL the block is drawn in one statement, the server calling
    `nextval` `count` times: only the sync draws from these sequences, under the
    lock, so the ids are consecutive. (`setval` past a block would save the calls
    but needs UPDATE on the sequence, which the runtime role does not get: it
    could also wind a sequence back.) The sequence is looked up once, not per
    call (`pg_get_serial_sequence` reads the catalog each time), and the block
    comes back as one array rather than `count` rows.
    """
    if postgres:
        sequence = f"(SELECT pg_get_serial_sequence('{kind.table}', '{kind.id_column}')::regclass)"
        drawn = session.execute(
            text(
                f"SELECT array_agg(id ORDER BY id) FROM "
                f"(SELECT nextval({sequence}) AS id FROM generate_series(1, :count)) AS block"
            ),
            {"count": count},
        ).scalar_one()
        return [int(value) for value in drawn]
    last = session.execute(
        text("SELECT seq FROM sqlite_sequence WHERE name = :table"), {"table": kind.table}
    ).scalar()
    start = int(last or 0) + 1
    return list(range(start, start + count))


def synced_number_parts(
    revision: object, payload_size: object, create: object, update: object
) -> list[bytes]:
    """pgrecord.segments of a synced row's integers after its position and sequence."""
    i8, null = pgrecord.INT8_SEGMENT, pgrecord.NULL_INT8
    return [
        i8(INT8, 8, revision),
        i8(INT8, 8, payload_size),
        null if create is None else i8(INT8, 8, create),
        null if update is None else i8(INT8, 8, update),
    ]


def synced_text_parts(row: Mapping[str, object]) -> list[bytes]:
    """pgrecord.segments of a synced row's columns after its sync time."""
    text, digest = pgrecord.text_segment, row[DIGEST]
    return [
        text(row["region"]),
        text(row["job_id"]),
        text(row["tenant_id"]),
        text(row["queue_id"]),
        text(row["status"]),
        text(row["governance_state"]),
        text(row["node_id"]),
        text(row["container_image"]),
        pgrecord.VAR_HEADER(BYTEA, len(digest)) + digest,  # type: ignore[arg-type,operator]
        text(row["source_cursor"]),
        text(row["sweep_id"]),
    ]


def synced_parts(row: Mapping[str, object]) -> list[bytes]:
    """pgrecord.segments of a synced row as the sync builds it (its values' types
    known), without a call per field: this runs for every row synced."""
    i8 = pgrecord.INT8_SEGMENT
    return [
        i8(INT8, 8, row["chain_position"]),
        i8(INT8, 8, row["sync_sequence"]),
        *synced_number_parts(
            row["revision"], row["payload_size"], row["create_time_ns"], row["update_time_ns"]
        ),
        pgrecord.timestamptz_segment(row["synced_at"]),
        *synced_text_parts(row),
    ]


def seal(kind: ChainKind, start: Tip, rows: Sequence[dict[str, object]]) -> Tip:
    """Give each row (its id already set) its position, chain (v2) and field checks, in order."""
    position, previous, row_id = start.position, start.chain, start.row_id
    plan = [(name, pgrecord.ENCODERS[oid]) for name, oid in kind.columns_v2]
    # What follows the previous link in every link: the domain, then the record's column count.
    head = kind.prefix_v2 + pgrecord.count(len(plan))
    sha256, checks, join = hashlib.sha256, pgrecord.field_checks, b"".join
    for row in rows:
        position += 1
        row["chain_position"] = position
        if kind is SYNCED:
            parts = synced_parts(row)
        else:
            parts = [encode(row[name]) for name, encode in plan]
        previous = sha256(previous + head + join(parts)).digest()
        row["chain"] = previous
        row["chain_checks"] = checks(parts)
        row["chain_version"] = V2
        row_id = row[kind.id_column]  # type: ignore[assignment]
    return Tip(position, row_id, previous)
