"""Reading a region's mirror for verification: each row's link input, in id order.

The walk (mirror_check.py) needs, per row, only its id, position, stored link,
the bytes its link hashes after the previous one (its encoding, chain.py) and
whether its payload matches its digest. On PostgreSQL the server computes the
encoding itself (`record_send` of the row's columns for v2 rows, the v1
encoding in SQL for older ones) and the rows stream through a server-side
cursor in large batches, so only about 60 bytes and one SHA-256 a row reach
Python. On SQLite the columns are read and encoded here. A row that breaks the
chain is then read in full (`details`) to name what changed.

On PostgreSQL the rows arrive as one streamed query (libpq's chunked rows),
so the server encodes the next rows while Python hashes the ones received;
a server-side cursor would leave one idle while the other works. The plan is
pinned to the (region, id) index in id order, so the encodings are computed
as the rows stream and never sorted (with no statistics yet the planner
sorted them and spilled to disk; with them it split the scan between workers
and merged them). A stream holds the connection until its last row, so a
row that breaks the chain cannot be read in full during it: the stream is
read to its end and the region walked again through server-side cursors,
which name the divergence as before. Only a diverged region pays for both.

`payloads=True` also hashes every payload (and quarantined raw record) and
compares it with its digest: on PostgreSQL the server does it, so the bytes
never cross the wire, but it reads every payload. The chain covers each
payload's digest either way.

The verifier's transaction puts `pg_catalog` first in its search path, so the
built-in functions and operators it relies on cannot be shadowed by objects
someone with write access to the database created.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Generator

import psycopg
from sqlalchemy import text
from sqlalchemy.orm import Session

from ppos.controlplane.core import hashchain
from ppos.controlplane.core.pgrecord import BYTEA, INT8, SQL_TYPES
from ppos.controlplane.security.keys import PublicKeySource
from ppos.controlplane.services.registry_sync import chain, checkpoints
from ppos.controlplane.services.registry_sync.chain import QUARANTINE, SYNCED, ChainKind
from ppos.controlplane.services.registry_sync.mirror_check import (
    Link,
    RegionReport,
    Row,
    verify_region,
)
from ppos.controlplane.services.registry_sync.models import SyncRegionRow
from ppos.controlplane.storage.base import UTCDateTime

_CONTENT = {
    SYNCED.table: ("canonical_payload", "canonical_payload_sha256", "synced_at"),
    QUARANTINE.table: ("raw_record", "raw_record_sha256", "quarantined_at"),
}
# Rows a server-side cursor fetches at once.
BATCH = 20_000
# Rows libpq receives at once from a streamed query (libpq 17 or later).
STREAM_CHUNK = 2_000
# The first libpq that streams rows in chunks (with an older one the walk uses cursors).
CHUNKED_LIBPQ = 170_000
_V1_TYPES = {
    "chain_position": INT8,
    "sync_sequence": INT8,
    "quarantine_id": INT8,
    "revision": INT8,
    "create_time_ns": INT8,
    "update_time_ns": INT8,
    "payload_size": INT8,
    "canonical_payload_sha256": BYTEA,
    "raw_record_sha256": BYTEA,
}


def _hex(data: bytes) -> str:
    return f"'\\x{data.hex()}'::bytea"


def _v1_value(name: str, stamp: str) -> str:
    """hashchain.encode_value of one column, in SQL (a type tag, then the value)."""
    if name == stamp:
        value = f"'\\x04'::bytea || int8send((EXTRACT(EPOCH FROM {name}) * 1000000)::int8)"
    elif _V1_TYPES.get(name) == INT8:
        value = f"'\\x01'::bytea || int8send({name})"
    elif _V1_TYPES.get(name) == BYTEA:
        value = f"'\\x03'::bytea || int4send(length({name})) || {name}"
    else:
        value = f"'\\x02'::bytea || int4send(octet_length({name})) || convert_to({name}, 'UTF8')"
    return f"CASE WHEN {name} IS NULL THEN '\\x00'::bytea ELSE {value} END"


def encoding_sql(kind: ChainKind) -> str:
    """The row's link input computed by PostgreSQL (chain.encoding, byte for byte)."""
    stamp = _CONTENT[kind.table][2]
    v1 = " || ".join(
        [_hex(hashchain.encode(kind.domain, ()))] + [_v1_value(n, stamp) for n in kind.fields]
    )
    columns = ", ".join(f"{name}::{SQL_TYPES[oid]}" for name, oid in kind.columns_v2)
    v2 = f"{_hex(kind.prefix_v2)} || record_send(ROW({columns}))"
    return f"CASE WHEN chain_version = {chain.V2} THEN {v2} ELSE {v1} END"


def _links_statement(kind: ChainKind, payloads: bool) -> str:
    content, digest, _ = _CONTENT[kind.table]
    check = f"sha256({content}) = {digest}" if payloads else "TRUE"
    return (
        f"SELECT {kind.id_column}, chain_position, chain, {encoding_sql(kind)}, {check} "
        f"FROM {kind.table} WHERE region = %(region)s ORDER BY {kind.id_column}"
    )


def _postgres_links(
    session: Session, kind: ChainKind, region: str, payloads: bool
) -> Generator[Link, None, None]:
    statement = _links_statement(kind, payloads)
    driver = session.connection().connection.driver_connection
    assert driver is not None
    with driver.cursor(name=f"verify_{kind.table}", binary=True) as cursor:
        cursor.itersize = BATCH
        cursor.execute(statement, {"region": region})
        yield from cursor


def _streamed_links(
    session: Session, kind: ChainKind, region: str, payloads: bool
) -> Generator[Link, None, None]:
    """The rows of `_postgres_links` in one streamed query (see the module's docstring)."""
    driver = session.connection().connection.driver_connection
    assert driver is not None
    with driver.cursor(binary=True) as cursor:
        yield from cursor.stream(
            _links_statement(kind, payloads), {"region": region}, size=STREAM_CHUNK
        )


def _columns(kind: ChainKind) -> list[str]:
    names = dict.fromkeys([kind.id_column, *kind.fields, *kind.names_v2])
    return [*names, "chain", "chain_checks", "chain_version"]


def _select(kind: ChainKind, where: str, *, with_content: bool) -> object:
    content, _, stamp = _CONTENT[kind.table]
    extra = f", {content} AS content" if with_content else ""
    return text(
        f"SELECT {', '.join(_columns(kind))}{extra} FROM {kind.table} WHERE {where} "
        f"ORDER BY {kind.id_column}"
    ).columns(**{stamp: UTCDateTime()})


def _as_row(kind: ChainKind, values: object) -> dict[str, object]:
    row: dict[str, object] = dict(zip(_columns(kind), values, strict=False))  # type: ignore[call-overload]
    for name in ("chain", "chain_checks", _CONTENT[kind.table][1]):
        if isinstance(row.get(name), memoryview):
            row[name] = bytes(row[name])  # type: ignore[call-overload]
    return row


def _sqlite_links(
    session: Session, kind: ChainKind, region: str, payloads: bool
) -> Generator[Link, None, None]:
    digest = _CONTENT[kind.table][1]
    statement = _select(kind, "region = :region", with_content=payloads)
    result = session.execute(statement, {"region": region})  # type: ignore[call-overload]
    for partition in result.partitions(2_000):
        for values in partition:
            row = _as_row(kind, values)
            position = row["chain_position"]
            link = row["chain"]
            content = values[-1]
            # Stored content of another type (SQLite's `||` makes text of a blob)
            # is a changed payload, never a crash.
            intact = not payloads or (
                isinstance(content, bytes) and hashlib.sha256(content).digest() == row[digest]
            )
            yield (
                int(row[kind.id_column]),  # type: ignore[call-overload]
                position if isinstance(position, int) else None,
                link if isinstance(link, bytes) else None,
                chain.encoding(kind, row["chain_version"], row),
                intact,
            )


def links(
    session: Session, kind: ChainKind, region: str, *, postgres: bool, payloads: bool = True
) -> Generator[Link, None, None]:
    """The region's rows of one chain, oldest first, as (id, position, chain, encoding,
    content intact); content is always intact when `payloads` is off."""
    if postgres:
        return _postgres_links(session, kind, region, payloads)
    return _sqlite_links(session, kind, region, payloads)


def details(session: Session, kind: ChainKind, row_id: int) -> Row:
    """One row with every column, read to name what changed in it."""
    statement = _select(kind, f"{kind.id_column} = :id", with_content=False)
    found = session.execute(statement, {"id": row_id}).first()  # type: ignore[call-overload]
    return _as_row(kind, found) if found is not None else {kind.id_column: row_id}


class _Diverged(Exception):
    """The streamed walk met a row that breaks a chain: the full walk names it."""


def _no_details(kind: ChainKind, row_id: int) -> Row:
    raise _Diverged


# Planner settings for the streamed walk, local to the verifier's transaction:
# rows in id order from the (region, id) index, in this process, as they stream.
_STREAM_PLAN = {"enable_sort": "off", "max_parallel_workers_per_gather": "0"}


def _set_plan(session: Session, settings: dict[str, str]) -> dict[str, str]:
    """Set planner settings for the rest of the transaction; the values they replace."""
    previous = {}
    for name, value in settings.items():
        previous[name] = str(
            session.execute(
                text(
                    "SELECT pg_catalog.current_setting(:name), "
                    "pg_catalog.set_config(:name, :value, true)"
                ),
                {"name": name, "value": value},
            ).scalar()
        )
    return previous


def _streamed_report(
    session: Session,
    region: str,
    keys: PublicKeySource,
    stored: list[checkpoints.StoredCheckpoint],
    cursor: str,
    payloads: bool,
) -> RegionReport | None:
    """The region verified from streamed rows; None when a row breaks a chain."""
    previous = _set_plan(session, _STREAM_PLAN)
    synced = _streamed_links(session, SYNCED, region, payloads)
    quarantined = _streamed_links(session, QUARANTINE, region, payloads)
    try:
        return verify_region(
            region,
            synced=synced,
            quarantined=quarantined,
            stored_checkpoints=stored,
            cursor=cursor,
            keys=keys,
            details=_no_details,
        )
    except _Diverged:
        # Read the open stream to its end: closing it early cancels the query,
        # and with it the transaction the full walk runs in.
        for rows in (synced, quarantined):
            if inspect.getgeneratorstate(rows) == inspect.GEN_SUSPENDED:
                for _ in rows:
                    pass
        return None
    finally:
        _set_plan(session, previous)


def verify_stored_region(
    session: Session, region: str, keys: PublicKeySource, *, postgres: bool, payloads: bool = True
) -> RegionReport:
    if postgres:
        # One snapshot for the rows, the checkpoints and the cursor: under READ
        # COMMITTED a page committing between two of the reads would look like a
        # truncated chain or a moved cursor. (A SQLite read transaction is one already.)
        session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        # Built-ins first in the search path; text sent as UTF-8 (record_send
        # converts text to the client's encoding), whatever the role's settings.
        session.execute(
            text(
                "SELECT pg_catalog.set_config('search_path', "
                "'pg_catalog, ' || pg_catalog.current_setting('search_path'), true), "
                "pg_catalog.set_config('client_encoding', 'UTF8', true)"
            )
        )
    region_row = session.get(SyncRegionRow, region)
    cursor = region_row.cursor if region_row is not None else ""
    stored = list(checkpoints.stored(session, region))
    if postgres and psycopg.pq.version() >= CHUNKED_LIBPQ:
        report = _streamed_report(session, region, keys, stored, cursor, payloads)
        if report is not None:
            return report
    synced = links(session, SYNCED, region, postgres=postgres, payloads=payloads)
    quarantined = links(session, QUARANTINE, region, postgres=postgres, payloads=payloads)
    try:
        return verify_region(
            region,
            synced=synced,
            quarantined=quarantined,
            stored_checkpoints=stored,
            cursor=cursor,
            keys=keys,
            details=lambda kind, row_id: details(session, kind, row_id),
        )
    finally:
        # A walk that stopped at a divergence leaves its server-side cursor open:
        # close it inside the transaction, not whenever the generator is collected.
        synced.close()
        quarantined.close()
