"""The per-region hash chains of synced and quarantined rows, extended in the page's transaction.

Each region has two chains, one over its synced revisions and one over its
quarantined records. A row's `chain` is `SHA-256(previous chain || every
stored field)` (core/hashchain.py): its position in the region's chain, its
sync sequence (drawn here, so the link can cover it), its key, its diagnostic
fields, its payload's SHA-256 and size, cursor, sweep and time. The payload is
covered through its digest; verification checks the digest against the bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from ppos.controlplane.core import hashchain

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


SYNCED = ChainKind("synced_jobs", "sync_sequence", SYNCED_DOMAIN, SYNCED_FIELDS)
QUARANTINE = ChainKind("sync_quarantine", "quarantine_id", QUARANTINE_DOMAIN, QUARANTINE_FIELDS)


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
    """`count` new row ids, in order (the caller holds the sequence lock, or SQLite's writer)."""
    if postgres:
        drawn = session.execute(
            text(
                f"SELECT nextval(pg_get_serial_sequence('{kind.table}', '{kind.id_column}')) "
                "FROM generate_series(1, :count)"
            ),
            {"count": count},
        ).scalars()
        return sorted(int(value) for value in drawn)
    last = session.execute(
        text("SELECT seq FROM sqlite_sequence WHERE name = :table"), {"table": kind.table}
    ).scalar()
    start = int(last or 0) + 1
    return list(range(start, start + count))


def seal(kind: ChainKind, start: Tip, rows: Sequence[dict[str, object]]) -> Tip:
    """Give each row (its id already set) its position, chain and field checks, in order."""
    position, previous, row_id = start.position, start.chain, start.row_id
    for row in rows:
        position += 1
        row["chain_position"] = position
        values = [row[name] for name in kind.fields]
        previous, checks = hashchain.link_and_checks(previous, kind.domain, values)  # type: ignore[arg-type]
        row["chain"] = previous
        row["chain_checks"] = checks
        row_id = int(row[kind.id_column])  # type: ignore[call-overload]
    return Tip(position, row_id, previous)
