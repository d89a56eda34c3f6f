"""The synced tables: immutable payloads, one transaction per page, fenced cursors."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError

from ppos.controlplane.runtime.schema import load_all
from ppos.controlplane.services.registry_sync import sweep_records
from ppos.controlplane.services.registry_sync.models import (
    QuarantinedRecordRow,
    SyncedJobRow,
    SyncRegionRow,
)
from ppos.controlplane.services.registry_sync.pages import CursorMoved, VerifiedPage, commit_page
from ppos.controlplane.services.registry_sync.verify import Accepted, Rejected, verify
from ppos.controlplane.storage.database import Database
from ppos.preflightsim import samples
from ppos.preflightsim.feed import Feed, unframe
from tests.registry_sync.checkpoint_keys import KEYS, SIGN

REGION = "eu-west-1"
NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
WAITING_FOR_LOCK = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"


@pytest.fixture
def db(database_url: str) -> Database:
    database = Database(database_url, pool_size=4)
    yield database  # type: ignore[misc]
    database.close()


def records(count: int, *, start: int = 0) -> tuple[Feed, list[Accepted | Rejected]]:
    feed = Feed(REGION)
    feed.extend(samples.generate(region=REGION, count=count + start, size=300))
    verified = [
        verify(unframe(feed.entry(p).wire), region=REGION, max_payload_bytes=1 << 20)
        for p in range(start + 1, start + count + 1)
    ]
    return feed, verified


def page(feed: Feed, items: list[Accepted | Rejected], generation: int, last: int) -> VerifiedPage:
    return VerifiedPage(
        region=REGION,
        sweep_id="swp_test",
        after_generation=generation,
        next_cursor=feed.cursor(last),
        end_of_feed=last == len(feed),
        remaining_changes=len(feed) - last,
        wire_size=0,
        records=items,
    )


def prepare(db: Database) -> None:
    def work(session):  # type: ignore[no-untyped-def]
        sweep_records.create_sweep(session, [REGION], started_by="test", request_id=None, now=NOW)
        sweep_records.ensure_region(session, REGION, NOW)

    db.write_sync(work)


def test_models_and_migrations_agree(db: Database) -> None:
    with db.write_engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = [d for d in compare_metadata(context, load_all()) if _ours(d)]
    assert diff == []


def _ours(diff: object) -> bool:
    return any(name in repr(diff) for name in ("synced_jobs", "sync_"))


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_payload_columns_use_lz4_on_postgresql(db: Database) -> None:
    with db.read_engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT attrelid::regclass::text, attname, attcompression FROM pg_attribute "
                "WHERE attname IN ('canonical_payload', 'raw_record') AND attnum > 0"
            )
        ).all()
    assert sorted(rows) == [
        ("sync_quarantine", "raw_record", "l"),
        ("synced_jobs", "canonical_payload", "l"),
    ]


def test_a_page_commits_rows_quarantine_and_cursor_together(db: Database) -> None:
    prepare(db)
    feed, items = records(6)
    bad = Rejected(b"\x00bytes as received", "INVALID_ENVELOPE", "not a JobRecord")
    outcome = db.write_sync(
        lambda s: commit_page(
            s, page(feed, [*items, bad], 0, 6), NOW, postgres=db.is_postgres, sign=SIGN, keys=KEYS
        )
    )
    assert (outcome.inserted, outcome.quarantined, outcome.generation) == (
        6,
        {"INVALID_ENVELOPE": 1},
        1,
    )

    def state(session):  # type: ignore[no-untyped-def]
        region = session.get(SyncRegionRow, REGION)
        jobs = session.scalar(select(func.count()).select_from(SyncedJobRow))
        held = session.scalars(select(QuarantinedRecordRow.raw_record)).all()
        return region.cursor, region.generation, region.records_synced, jobs, held

    assert db.read_sync(state) == (feed.cursor(6), 1, 6, 6, [b"\x00bytes as received"])

    # A page read before that commit is fenced off: nothing of it is written.
    more_feed, more = records(4, start=6)
    with pytest.raises(CursorMoved):
        db.write_sync(
            lambda s: commit_page(
                s, page(more_feed, more, 0, 10), NOW, postgres=db.is_postgres, sign=SIGN, keys=KEYS
            )
        )
    assert db.read_sync(state) == (feed.cursor(6), 1, 6, 6, [b"\x00bytes as received"])

    # A failure in the middle of the transaction leaves nothing either.
    class Boom(Exception):
        pass

    def half(session):  # type: ignore[no-untyped-def]
        commit_page(
            session,
            page(more_feed, more, 1, 10),
            NOW,
            postgres=db.is_postgres,
            sign=SIGN,
            keys=KEYS,
        )
        raise Boom

    with pytest.raises(Boom):
        db.write_sync(half)
    assert db.read_sync(state) == (feed.cursor(6), 1, 6, 6, [b"\x00bytes as received"])


def test_a_revision_is_never_overwritten(db: Database) -> None:
    prepare(db)
    feed, items = records(3)
    db.write_sync(
        lambda s: commit_page(
            s, page(feed, items, 0, 3), NOW, postgres=db.is_postgres, sign=SIGN, keys=KEYS
        )
    )
    original = items[1]
    assert isinstance(original, Accepted)
    rewritten = dataclasses.replace(original, payload=b"{}", digest=hashlib.sha256(b"{}").digest())
    again = db.write_sync(
        lambda s: commit_page(
            s,
            page(feed, [items[0], rewritten], 1, 3),
            NOW,
            postgres=db.is_postgres,
            sign=SIGN,
            keys=KEYS,
        )
    )
    assert (again.inserted, again.duplicates, again.quarantined) == (0, 1, {"REVISION_CONFLICT": 1})
    stored = db.read_sync(
        lambda s: s.scalar(
            select(SyncedJobRow.canonical_payload).where(SyncedJobRow.job_id == original.job_id)
        )
    )
    assert bytes(stored) == original.payload


SYNCED_FORGERIES = {
    "region": "us-east-1",
    "job_id": "job_forged",
    "revision": 7,
    "tenant_id": "tenant_forged",
    "queue_id": "queue_forged",
    "status": "JOB_STATUS_FAILED",
    "governance_state": "FAILED_RUNTIME_ENVIRONMENT",
    "node_id": "node_forged",
    "container_image": "registry.example/forged:1",
    "create_time_ns": 1,
    "update_time_ns": 1,
    "canonical_payload": b"{}",
    "canonical_payload_sha256": b"\x00" * 32,
    "payload_size": 2,
    "source_cursor": "c_forged",
    "sweep_id": "swp_other",
    "synced_at": NOW + dt.timedelta(days=1),
    "sync_sequence": 99_999,
}
QUARANTINE_FORGERIES = {
    "region": "us-east-1",
    "job_id": "job_forged",
    "revision": 7,
    "reason": "REVISION_CONFLICT",
    "detail": "nothing to see",
    "raw_record": b"{}",
    "raw_record_sha256": b"\x00" * 32,
    "source_cursor": "c_forged",
    "sweep_id": "swp_other",
    "quarantined_at": NOW + dt.timedelta(days=1),
    "quarantine_id": 99_999,
}


@pytest.mark.parametrize("column", sorted(SYNCED_FORGERIES))
def test_the_database_refuses_to_rewrite_any_column_of_a_synced_revision(
    db: Database, column: str
) -> None:
    prepare(db)
    feed, items = records(2)
    db.write_sync(
        lambda s: commit_page(
            s, page(feed, items, 0, 2), NOW, postgres=db.is_postgres, sign=SIGN, keys=KEYS
        )
    )
    forged = SYNCED_FORGERIES[column]
    with pytest.raises(DBAPIError, match="append-only"):
        db.write_sync(lambda s: s.execute(update(SyncedJobRow).values({column: forged})))


@pytest.mark.parametrize("column", sorted(QUARANTINE_FORGERIES))
def test_the_database_refuses_to_edit_any_column_of_a_quarantined_record(
    db: Database, column: str
) -> None:
    prepare(db)
    feed, _ = records(1)
    bad = Rejected(b"\xff\xfe", "INVALID_ENVELOPE", "not a JobRecord")
    db.write_sync(
        lambda s: commit_page(
            s, page(feed, [bad], 0, 1), NOW, postgres=db.is_postgres, sign=SIGN, keys=KEYS
        )
    )
    forged = QUARANTINE_FORGERIES[column]
    with pytest.raises(DBAPIError, match="append-only"):
        db.write_sync(lambda s: s.execute(update(QuarantinedRecordRow).values({column: forged})))


@pytest.mark.parametrize("table", ["synced_jobs", "sync_quarantine"])
@pytest.mark.parametrize("statement", ["DELETE FROM {table}", "TRUNCATE {table}"])
def test_the_database_refuses_to_delete_synced_truth(
    db: Database, table: str, statement: str
) -> None:
    if statement.startswith("TRUNCATE") and not db.is_postgres:
        pytest.skip("SQLite has no TRUNCATE (its DELETE fires the trigger)")
    prepare(db)
    feed, items = records(2)
    bad = Rejected(b"\xff\xfe", "INVALID_ENVELOPE", "not a JobRecord")
    db.write_sync(
        lambda s: commit_page(
            s, page(feed, [*items, bad], 0, 2), NOW, postgres=db.is_postgres, sign=SIGN, keys=KEYS
        )
    )
    with pytest.raises(DBAPIError, match="append-only"):
        db.write_sync(lambda s: s.execute(text(statement.format(table=table))))
    count = db.read_sync(lambda s: s.scalar(text(f"SELECT count(*) FROM {table}")))
    assert count == (2 if table == "synced_jobs" else 1)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_page_commits_take_the_sequence_lock_on_postgresql(db: Database) -> None:
    """While one page transaction is open, another cannot draw sync sequences.

    (SQLite has one writer at a time, so its sequences are in commit order anyway.)
    """
    prepare(db)
    feed, items = records(4)
    entered = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def slow(session):  # type: ignore[no-untyped-def]
        commit_page(session, page(feed, items[:2], 0, 2), NOW, postgres=True, sign=SIGN, keys=KEYS)
        entered.set()
        release.wait(10)
        order.append("first committed")

    def second() -> None:
        entered.wait(10)

        def work(session):  # type: ignore[no-untyped-def]
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": 0x70706F7373657100})
            order.append("second got the lock")

        db.write_sync(work)

    first = threading.Thread(target=lambda: db.write_sync(slow))
    other = threading.Thread(target=second)
    first.start()
    other.start()
    entered.wait(10)
    for _ in range(500):  # until the second transaction queues for the lock
        if db.read_sync(lambda s: s.scalar(text(WAITING_FOR_LOCK))):
            break
        threading.Event().wait(0.01)
    assert order == []  # neither has finished: the second is blocked
    release.set()
    first.join(10)
    other.join(10)
    assert order == ["first committed", "second got the lock"]
