"""Reading a region's mirror for verification: rows in id order, payloads checked in place.

On PostgreSQL the payload's SHA-256 is computed by the server (`sha256()`),
so the bytes never cross the wire; on SQLite they are read and hashed here.
`payloads=False` skips that (the chain still covers each payload's digest).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from sqlalchemy import text
from sqlalchemy.orm import Session

from ppos.controlplane.security.keys import PublicKeySource
from ppos.controlplane.services.registry_sync import checkpoints
from ppos.controlplane.services.registry_sync.chain import QUARANTINE, SYNCED, ChainKind
from ppos.controlplane.services.registry_sync.mirror_check import RegionReport, Row, verify_region
from ppos.controlplane.services.registry_sync.models import SyncRegionRow
from ppos.controlplane.storage.base import UTCDateTime

_CONTENT = {
    SYNCED.table: ("canonical_payload", "canonical_payload_sha256", "synced_at"),
    QUARANTINE.table: ("raw_record", "raw_record_sha256", "quarantined_at"),
}
BATCH = 2_000


def rows(
    session: Session, kind: ChainKind, region: str, *, postgres: bool, payloads: bool = True
) -> Iterator[Row]:
    """The region's rows of one chain, oldest first, each with `content_intact`
    (always True when `payloads` is off: then only the chain and digests are checked)."""
    content, digest, stamp = _CONTENT[kind.table]
    columns = ["chain_position", "chain", "chain_checks"]
    columns += [name for name in kind.fields if name != "chain_position"]
    if not payloads:
        check = "TRUE"
    elif postgres:
        check = f"sha256({content}) = {digest}"
    else:
        check = content
    statement = text(
        f"SELECT {', '.join(columns)}, {check} AS content "
        f"FROM {kind.table} WHERE region = :region ORDER BY {kind.id_column}"
    ).columns(**{stamp: UTCDateTime()})
    result = session.execute(statement, {"region": region})
    hashed_here = payloads and not postgres
    for partition in result.partitions(BATCH):
        for values in partition:
            row: dict[str, object] = dict(zip(columns, values, strict=False))
            held = values[-1]
            if not postgres:  # SQLite hands back BLOBs as bytes already; psycopg too
                for name in ("chain", "chain_checks", digest):
                    value = row[name]
                    if isinstance(value, memoryview):
                        row[name] = bytes(value)
            row["content_intact"] = (
                hashlib.sha256(held).digest() == row[digest] if hashed_here else bool(held)
            )
            yield row


def verify_stored_region(
    session: Session, region: str, keys: PublicKeySource, *, postgres: bool, payloads: bool = True
) -> RegionReport:
    if postgres:
        # One snapshot for the rows, the checkpoints and the cursor: under READ
        # COMMITTED a page committing between two of the reads would look like a
        # truncated chain or a moved cursor. (A SQLite read transaction is one already.)
        session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
    cursor = session.get(SyncRegionRow, region)
    return verify_region(
        region,
        synced=rows(session, SYNCED, region, postgres=postgres, payloads=payloads),
        quarantined=rows(session, QUARANTINE, region, postgres=postgres, payloads=payloads),
        stored_checkpoints=list(checkpoints.stored(session, region)),
        cursor=cursor.cursor if cursor is not None else "",
        keys=keys,
    )
