"""Commit one page: its rows, its quarantined records and the cursor, in ONE transaction.

Everything a page changes is written by `commit_page` inside the caller's
transaction: new revisions, quarantined records, the region's cursor and
counters, and the sweep's progress. A crash before the commit leaves none of
it; after, all of it. The region row's `generation` fences concurrent
sweepers of one region (only one commit per generation succeeds).

Rows are only ever inserted, each chained to the region's previous one
(chain.py), and the page ends with a signed checkpoint of the chains' heads
and the cursor in the audit log (checkpoints.py). A revision seen again with the same digest is a
no-op; with another digest it is quarantined as REVISION_CONFLICT and the
stored one stays as it is.

On PostgreSQL the transaction first takes a transaction-scoped advisory lock,
so sync sequences become visible in the order they were drawn: a consumer
that has read sequence N never later finds a new row at or below N. New rows
go in with COPY (binary) inside a savepoint; only when the unique key refuses
the page (the registry resent revisions already held) are the stored digests
looked up, and the page is written again without them. On PostgreSQL the
rows' bytes were encoded when the page was verified (prepared_rows.py), so
the transaction only draws the ids, seals the links and streams the COPY.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import psycopg
from sqlalchemy import Table, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ppos.controlplane.core.logging import get_logger
from ppos.controlplane.security.keys import PublicKeySource
from ppos.controlplane.services.registry_sync import chain, checkpoints, prepared_rows
from ppos.controlplane.services.registry_sync.checkpoints import Checkpoint, Signer
from ppos.controlplane.services.registry_sync.models import (
    QuarantinedRecordRow,
    SweepRegionRow,
    SweepRow,
    SyncedJobRow,
    SyncRegionRow,
)
from ppos.controlplane.services.registry_sync.synced_rows import (
    COPY_COLUMNS,
    row_values,
)
from ppos.controlplane.services.registry_sync.verify import (
    REVISION_CONFLICT,
    Accepted,
    Rejected,
)
from ppos.controlplane.storage.locks import transaction_lock

_log = get_logger("ppos.registrysync.pages")

# pg_advisory_xact_lock key that orders sync sequences ("ppos" "sync" "seq").
SEQUENCE_LOCK_KEY = 0x70706F73_73657100
EXISTING_CHUNK = 500


class CursorMoved(Exception):
    """Another sweeper committed this region since the page was requested."""


@dataclass(frozen=True)
class VerifiedPage:
    """A received page after verification, in the order the records arrived."""

    region: str
    sweep_id: str
    after_generation: int
    next_cursor: str
    end_of_feed: bool
    remaining_changes: int
    wire_size: int
    records: Sequence[Accepted | Rejected]
    # Where the page's time went (milliseconds), for the page_committed log line.
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class PageOutcome:
    inserted: int = 0
    inserted_bytes: int = 0
    runtime_failures: int = 0  # inserted in governance state FAILED_RUNTIME_ENVIRONMENT
    duplicates: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    generation: int = 0
    cursor: str = ""
    cancel_requested: bool = False
    newest_change_ns: int | None = None

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())


def _split_page(page: VerifiedPage) -> tuple[dict[tuple[str, int], Accepted], list[Rejected], int]:
    """First record of each key, rejected records (incl. in-page conflicts), in-page repeats."""
    first_seen: dict[tuple[str, int], Accepted] = {}
    rejected: list[Rejected] = []
    duplicates = 0
    for item in page.records:
        if isinstance(item, Rejected):
            rejected.append(item)
            continue
        held = first_seen.get(item.key)
        if held is None:
            first_seen[item.key] = item
        elif held.digest == item.digest:
            duplicates += 1
        else:
            rejected.append(_conflict(item, held.digest, "earlier in the same page"))
    return first_seen, rejected, duplicates


def _against_stored(
    session: Session, region: str, candidates: dict[tuple[str, int], Accepted]
) -> tuple[list[Accepted], list[Rejected], int]:
    """Candidates split into new rows, conflicts with stored revisions, and no-op repeats."""
    existing = _existing_digests(session, region, candidates)
    new_rows: list[Accepted] = []
    rejected: list[Rejected] = []
    duplicates = 0
    for key, item in candidates.items():
        stored = existing.get(key)
        if stored is None:
            new_rows.append(item)
        elif stored == item.digest:
            duplicates += 1
        else:
            rejected.append(_conflict(item, stored, "already stored"))
    return new_rows, rejected, duplicates


def _conflict(item: Accepted, held_digest: bytes, where: str) -> Rejected:
    return Rejected(
        item.raw,
        REVISION_CONFLICT,
        f"revision {item.revision} of {item.job_id} {where} with SHA-256 {held_digest.hex()}; "
        f"this one has {item.digest.hex()} (a revision is immutable: the first one is kept)",
        item.job_id,
        item.revision,
        item.cursor,
    )


def _existing_digests(
    session: Session, region: str, records: dict[tuple[str, int], Accepted]
) -> dict[tuple[str, int], bytes]:
    job_ids = sorted({job_id for job_id, _ in records})
    found: dict[tuple[str, int], bytes] = {}
    for start in range(0, len(job_ids), EXISTING_CHUNK):
        chunk = job_ids[start : start + EXISTING_CHUNK]
        rows = session.execute(
            select(
                SyncedJobRow.job_id,
                SyncedJobRow.revision,
                SyncedJobRow.canonical_payload_sha256,
            ).where(SyncedJobRow.region == region, SyncedJobRow.job_id.in_(chunk))
        )
        for job_id, revision, digest in rows:
            found[(job_id, revision)] = bytes(digest)
    return found


def _sealed(
    session: Session,
    kind: chain.ChainKind,
    start: chain.Tip,
    rows: list[dict[str, object]],
    *,
    postgres: bool,
) -> chain.Tip:
    """Rows given their ids (drawn now, so the chain covers them) and their links."""
    for row, row_id in zip(
        rows, chain.draw_ids(session, kind, len(rows), postgres=postgres), strict=True
    ):
        row[kind.id_column] = row_id
    return chain.seal(kind, start, rows)


def _insert_rows(
    session: Session,
    rows: list[Accepted],
    page: VerifiedPage,
    now: dt.datetime,
    start: chain.Tip,
    *,
    postgres: bool,
) -> chain.Tip | None:
    """Insert every row, chained after `start`, inside a savepoint; the chain's new
    tip, or None (and nothing inserted) when a key exists.

    New revisions are the rule: a registry resends one only after a failure on
    its side. So the page goes in whole first (COPY on PostgreSQL), and only if
    the unique key refuses it are the stored revisions looked up.
    """
    if not rows:
        return start
    if postgres:
        return _copy_rows(session, rows, page, now, start)
    values = [row_values(item, page.region, page.sweep_id, now) for item in rows]
    end = _sealed(session, chain.SYNCED, start, values, postgres=postgres)
    try:
        with session.begin_nested():
            session.execute(insert(SyncedJobRow), values)
    except IntegrityError:
        return None
    return end


def _copy_rows(
    session: Session, rows: list[Accepted], page: VerifiedPage, now: dt.datetime, start: chain.Tip
) -> chain.Tip | None:
    """`_insert_rows` on PostgreSQL: the rows as prepared ahead (prepared_rows.py),
    sealed and written with one COPY inside a savepoint."""
    ready = [prepared_rows.prepared(item, page.region, page.sweep_id) for item in rows]
    ids = chain.draw_ids(session, chain.SYNCED, len(ready), postgres=True)
    sealing = prepared_rows.CopySeal(start, ids, ready, now)
    driver = session.connection().connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor:
        cursor.execute("SAVEPOINT sync_page_rows")
        statement = f"COPY synced_jobs ({', '.join(COPY_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
        try:
            with cursor.copy(statement) as copy:
                for block in sealing.blocks():
                    copy.write(block)
        except psycopg.errors.UniqueViolation:
            cursor.execute("ROLLBACK TO SAVEPOINT sync_page_rows")
            return None
        cursor.execute("RELEASE SAVEPOINT sync_page_rows")
    assert sealing.tip is not None
    return sealing.tip


def _quarantine(
    session: Session,
    rejected: list[Rejected],
    page: VerifiedPage,
    now: dt.datetime,
    start: chain.Tip,
    *,
    postgres: bool,
) -> chain.Tip:
    if not rejected:
        return start
    values: list[dict[str, object]] = [
        {
            "region": page.region,
            "job_id": item.job_id,
            "revision": item.revision,
            "reason": item.reason,
            "detail": item.detail[:4000],
            "raw_record": item.raw,
            "raw_record_sha256": hashlib.sha256(item.raw).digest(),
            "source_cursor": item.cursor or page.next_cursor,
            "sweep_id": page.sweep_id,
            "quarantined_at": now,
        }
        for item in rejected
    ]
    end = _sealed(session, chain.QUARANTINE, start, values, postgres=postgres)
    session.execute(insert(QuarantinedRecordRow), values)
    return end


def _chain_starts(
    session: Session, region: str, keys: PublicKeySource
) -> tuple[chain.Tip, chain.Tip, bool]:
    """Where the page's rows chain on: the newest signed checkpoint's tips (the
    tables' last rows when the region has none yet, e.g. chained by the
    migration; then this page signs its first checkpoint whatever it holds)."""
    signed = checkpoints.newest_signed(session, region, keys)
    if signed is not None:
        held = (
            chain.tip(session, chain.SYNCED, region),
            chain.tip(session, chain.QUARANTINE, region),
        )
        if held != (signed.synced, signed.quarantine):
            _log.warning("sync.chain_not_as_signed", region=region)
        return signed.synced, signed.quarantine, False
    return (
        chain.tip(session, chain.SYNCED, region),
        chain.tip(session, chain.QUARANTINE, region),
        True,
    )


def commit_page(
    session: Session,
    page: VerifiedPage,
    now: dt.datetime,
    *,
    postgres: bool,
    sign: Signer,
    keys: PublicKeySource,
) -> PageOutcome:
    """Write the page, extend the region's chains, advance the cursor and append a
    signed checkpoint, in the caller's (one) transaction."""
    transaction_lock(session, SEQUENCE_LOCK_KEY)
    region = session.scalars(
        select(SyncRegionRow).where(SyncRegionRow.region == page.region).with_for_update()
    ).one()
    if region.generation != page.after_generation:
        raise CursorMoved(
            f"region {page.region}: cursor generation is {region.generation}, "
            f"the page was read after {page.after_generation}"
        )
    previous_cursor = region.cursor
    candidates, rejected, duplicates = _split_page(page)
    new_rows = list(candidates.values())
    starts = _chain_starts(session, page.region, keys)
    start = starts[0]
    synced = _insert_rows(session, new_rows, page, now, start, postgres=postgres)
    if synced is None:
        # Some of these revisions are stored already: insert only the new ones.
        new_rows, conflicts, repeats = _against_stored(session, page.region, candidates)
        rejected += conflicts
        duplicates += repeats
        synced = _insert_rows(session, new_rows, page, now, start, postgres=postgres)
        if synced is None:
            raise CursorMoved(f"region {page.region}: revisions appeared during the page")
    quarantined = _quarantine(session, rejected, page, now, starts[1], postgres=postgres)

    outcome = PageOutcome(
        inserted=len(new_rows),
        inserted_bytes=sum(len(item.payload) for item in new_rows),
        runtime_failures=sum(
            item.governance_state == "GOVERNANCE_STATE_FAILED_RUNTIME_ENVIRONMENT"
            for item in new_rows
        ),
        duplicates=duplicates,
        cursor=page.next_cursor,
    )
    for item in rejected:
        outcome.quarantined[item.reason] = outcome.quarantined.get(item.reason, 0) + 1
    _advance_region(region, page, outcome, new_rows, now)
    if new_rows or rejected or page.next_cursor != previous_cursor or starts[2]:
        checkpoint = Checkpoint(
            page.region, region.generation, page.next_cursor, synced, quarantined
        )
        checkpoints.append(session, checkpoint, sign)
    _count_in_sweep(session, page, outcome)
    outcome.cancel_requested = bool(
        session.scalar(select(SweepRow.cancel_requested).where(SweepRow.sweep_id == page.sweep_id))
    )
    return outcome


def _advance_region(
    region: SyncRegionRow,
    page: VerifiedPage,
    outcome: PageOutcome,
    new_rows: list[Accepted],
    now: dt.datetime,
) -> None:
    """The region's cursor past the page, and its counters and lag with the page in them."""
    stamps = [item.update_time_ns for item in new_rows if item.update_time_ns is not None]
    newest = region.newest_change_ns
    if stamps:
        newest = max(stamps) if newest is None else max(newest, *stamps)
    outcome.newest_change_ns = newest

    region.cursor = page.next_cursor
    region.generation += 1
    region.lag_changes = page.remaining_changes
    region.newest_change_ns = newest
    if page.end_of_feed:
        region.head_cursor = page.next_cursor
    region.records_synced += outcome.inserted
    region.bytes_synced += outcome.inserted_bytes
    region.duplicates_skipped += outcome.duplicates
    region.quarantined_count += outcome.quarantined_total
    region.pages_committed += 1
    region.status_version += 1
    region.updated_at = now
    outcome.generation = region.generation


def _count_in_sweep(session: Session, page: VerifiedPage, outcome: PageOutcome) -> None:
    """The page in its sweep's counters for the region."""
    # The table's Core statement: the ORM's bulk-update steps cost more than the UPDATE.
    table = cast(Table, SweepRegionRow.__table__)
    c = table.c
    session.execute(
        update(table)
        .where(c.sweep_id == page.sweep_id, c.region == page.region)
        .values(
            records_synced=c.records_synced + outcome.inserted,
            bytes_synced=c.bytes_synced + outcome.inserted_bytes,
            quarantined=c.quarantined + outcome.quarantined_total,
            duplicates_skipped=c.duplicates_skipped + outcome.duplicates,
            pages=c.pages + 1,
        )
    )
