"""Tampering with the mirror as someone with database access would: each tamper is
found by verification, with the row and the field named.

The triggers refuse these writes (test_storage.py); here the tamperer goes past
them: on SQLite by dropping the triggers, on PostgreSQL as the tables' owner
(the role the tests connect as), who may `DISABLE TRIGGER` for a transaction.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import insert, select, text
from sqlalchemy.engine import Connection

from ppos.controlplane.core import pgrecord
from ppos.controlplane.services.registry_sync import chain, mirror_reads
from ppos.controlplane.services.registry_sync import mirror_check as mc
from ppos.controlplane.services.registry_sync.chain import SYNCED
from ppos.controlplane.services.registry_sync.mirror_reads import verify_stored_region
from ppos.controlplane.services.registry_sync.mirror_verifier import MirrorVerifier
from ppos.controlplane.services.registry_sync.models import SyncedJobRow
from ppos.controlplane.services.registry_sync.pages import commit_page
from ppos.controlplane.services.registry_sync.synced_rows import row_values
from ppos.controlplane.services.registry_sync.verify import Rejected
from ppos.controlplane.storage import migrate
from ppos.controlplane.storage.database import Database
from tests.registry_sync.checkpoint_keys import KEYS, SIGN, make_keys
from tests.registry_sync.test_storage import NOW, REGION, page, prepare, records

TRIGGERS = ("no_update", "no_delete")
GUARDED = ("synced_jobs", "sync_quarantine")
# Diagnostic columns rewritten on the row at position 3: the field is named.
FIELD_FORGERIES: dict[str, object] = {
    "job_id": "job_forged",
    "revision": 99,
    "tenant_id": "tenant_forged",
    "queue_id": "queue_forged",
    "status": "JOB_STATUS_FAILED",
    "governance_state": "FAILED_RUNTIME_ENVIRONMENT",
    "node_id": "node_forged",
    "container_image": "registry.example/forged:1",
    "create_time_ns": 1,
    "update_time_ns": 1,
    "canonical_payload_sha256": b"\x01" * 32,
    "payload_size": 3,
    "source_cursor": "c_forged",
    "sweep_id": "swp_forged",
}


@pytest.fixture
def db(database_url: str) -> Database:
    database = Database(database_url, pool_size=2)
    yield database  # type: ignore[misc]
    database.close()


@pytest.fixture
def mirror(db: Database) -> Database:
    """Ten synced revisions over two pages, and two quarantined records."""
    prepare(db)
    feed, items = records(10)
    first = [*items[:6], Rejected(b"\xff\x01", "INVALID_ENVELOPE", "not a JobRecord")]
    second = [*items[6:], Rejected(b"\xff\x02", "INVALID_ENVELOPE", "not a JobRecord")]
    for generation, (chunk, last) in enumerate(((first, 6), (second, 10))):
        db.write_sync(
            lambda s, c=chunk, g=generation, n=last: commit_page(
                s, page(feed, c, g, n), NOW, postgres=db.is_postgres, sign=SIGN, keys=KEYS
            )
        )
    return db


def verify(db: Database) -> mc.RegionReport:
    return db.read_sync(lambda s: verify_stored_region(s, REGION, KEYS, postgres=db.is_postgres))


def tamper(db: Database, work: Callable[[Connection], Any]) -> None:
    with db.write_engine.begin() as connection:
        for table in GUARDED:
            if db.is_postgres:
                connection.exec_driver_sql(f"ALTER TABLE {table} DISABLE TRIGGER USER")
            else:
                for trigger in TRIGGERS:
                    connection.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_{trigger}")
        work(connection)
        if db.is_postgres:
            for table in GUARDED:
                connection.exec_driver_sql(f"ALTER TABLE {table} ENABLE TRIGGER USER")


def sql(statement: str, **params: object) -> Callable[[Connection], Any]:
    return lambda connection: connection.execute(text(statement), params)


def row_at(db: Database, position: int) -> dict[str, Any]:
    """A stored row's columns, typed as the models read them."""
    with db.read_engine.connect() as connection:
        found = connection.execute(
            select(SyncedJobRow.__table__).where(SyncedJobRow.chain_position == position)
        ).mappings()
        return dict(found.one())


def test_a_clean_mirror_verifies_clean(mirror: Database) -> None:
    report = verify(mirror)
    assert report.divergence is None
    assert (report.synced_rows, report.quarantined_rows, report.checkpoints) == (10, 2, 2)
    assert report.synced_head == row_at(mirror, 10)["chain"]


@pytest.mark.parametrize("column", sorted(FIELD_FORGERIES))
def test_a_rewritten_field_is_named(mirror: Database, column: str) -> None:
    tamper(
        mirror,
        sql(
            f"UPDATE synced_jobs SET {column} = :v WHERE chain_position = 3",
            v=FIELD_FORGERIES[column],
        ),
    )
    divergence = verify(mirror).divergence
    assert divergence is not None
    assert (divergence.kind, divergence.table, divergence.position) == (
        mc.CHANGED,
        "synced_jobs",
        3,
    )
    assert divergence.fields == (column,)


def test_a_rewritten_payload_is_found_against_its_digest(mirror: Database) -> None:
    tamper(
        mirror,
        sql("UPDATE synced_jobs SET canonical_payload = :v WHERE chain_position = 3", v=b"{}"),
    )
    divergence = verify(mirror).divergence
    assert divergence is not None
    assert (divergence.kind, divergence.position, divergence.fields) == (
        mc.CHANGED,
        3,
        ("canonical_payload",),
    )


def test_a_rewritten_sync_time_and_sequence_are_named(mirror: Database) -> None:
    tamper(
        mirror,
        sql(
            "UPDATE synced_jobs SET sync_sequence = sync_sequence + 1000, synced_at = :t "
            "WHERE chain_position = 10",
            t="2027-01-01 00:00:00+00:00" if mirror.is_postgres else "2027-01-01 00:00:00.000000",
        ),
    )
    divergence = verify(mirror).divergence
    assert divergence is not None
    assert (divergence.kind, divergence.position) == (mc.CHANGED, 10)
    assert divergence.fields == ("sync_sequence", "synced_at")


def test_a_row_moved_to_another_region_leaves_a_gap(mirror: Database) -> None:
    tamper(mirror, sql("UPDATE synced_jobs SET region = 'us-east-1' WHERE chain_position = 3"))
    divergence = verify(mirror).divergence
    assert divergence is not None
    assert (divergence.kind, divergence.position) == (mc.DELETED, 4)
    assert "positions 3..3 are missing" in divergence.detail


def test_a_deleted_row_is_a_gap(mirror: Database) -> None:
    tamper(mirror, sql("DELETE FROM synced_jobs WHERE chain_position = 5"))
    divergence = verify(mirror).divergence
    assert divergence is not None
    assert (divergence.kind, divergence.table, divergence.position) == (
        mc.DELETED,
        "synced_jobs",
        6,
    )


def _forged_after(db: Database, position: int, **changes: object) -> dict[str, Any]:
    """A row as a tamperer who knows the chain's encoding would forge it."""
    previous = row_at(db, position)
    row = {**row_at(db, position + 1 if position < 10 else position), **changes}
    row["chain_position"] = position + 1
    row["chain"] = hashlib.sha256(previous["chain"] + chain.encoding(SYNCED, 2, row)).digest()
    parts = pgrecord.segments(SYNCED.oids_v2, [row[name] for name in SYNCED.names_v2])
    row["chain_checks"] = pgrecord.field_checks(parts)
    return row


def _insert(row: dict[str, Any]) -> Callable[[Connection], Any]:
    return lambda connection: connection.execute(insert(SyncedJobRow.__table__), row)


def test_a_forged_row_appended_with_its_own_digest_and_link_is_unsigned(mirror: Database) -> None:
    payload = b'{"jobId":"job_forged"}'
    forged = _forged_after(
        mirror,
        10,
        sync_sequence=row_at(mirror, 10)["sync_sequence"] + 1,
        job_id="job_forged",
        canonical_payload=payload,
        canonical_payload_sha256=hashlib.sha256(payload).digest(),
        payload_size=len(payload),
    )
    tamper(mirror, _insert(forged))
    divergence = verify(mirror).divergence
    assert divergence is not None
    assert (divergence.kind, divergence.position) == (mc.INSERTED, 11)
    assert "after the last signed checkpoint" in divergence.detail


def test_a_forged_row_without_a_chain_is_an_insertion(mirror: Database) -> None:
    row = row_at(mirror, 4)
    del row["sync_sequence"]
    row.update(job_id="job_forged", chain=None, chain_position=None, chain_checks=None)
    tamper(mirror, _insert(row))
    divergence = verify(mirror).divergence
    assert divergence is not None
    assert (divergence.kind, divergence.fields, divergence.job_id) == (
        mc.INSERTED,
        ("chain",),
        "job_forged",
    )


def test_a_revision_deleted_and_reinserted_with_a_forged_payload_is_found(mirror: Database) -> None:
    original = row_at(mirror, 3)
    payload = b'{"governanceState":"FAILED_RUNTIME_ENVIRONMENT"}'
    forged = _forged_after(
        mirror,
        2,
        **{name: original[name] for name in ("sync_sequence", "job_id", "revision")},
        canonical_payload=payload,
        canonical_payload_sha256=hashlib.sha256(payload).digest(),
        payload_size=len(payload),
        governance_state="FAILED_RUNTIME_ENVIRONMENT",
    )

    def swap(connection: Connection) -> None:
        sql("DELETE FROM synced_jobs WHERE chain_position = 3")(connection)
        _insert(forged)(connection)

    tamper(mirror, swap)
    divergence = verify(mirror).divergence
    assert divergence is not None
    assert (divergence.kind, divergence.position, divergence.job_id) == (
        mc.REWRITTEN,
        3,
        original["job_id"],
    )


@pytest.mark.parametrize("statement", ["DELETE FROM synced_jobs", "TRUNCATE synced_jobs"])
def test_a_truncated_table_or_tail_is_found(mirror: Database, statement: str) -> None:
    if statement.startswith("TRUNCATE") and not mirror.is_postgres:
        statement = "DELETE FROM synced_jobs WHERE chain_position > 8"
    tamper(mirror, sql(statement))
    divergence = verify(mirror).divergence
    assert divergence is not None
    assert (divergence.kind, divergence.table) == (mc.TRUNCATED, "synced_jobs")
    assert "counts 6 rows" in divergence.detail or "counts 10 rows" in divergence.detail


def test_a_moved_cursor_is_found(mirror: Database) -> None:
    tamper(mirror, sql("UPDATE sync_regions SET cursor = 'c_far_ahead'"))
    divergence = verify(mirror).divergence
    assert divergence is not None
    assert divergence.kind == mc.CURSOR_MOVED
    assert "c_far_ahead" in divergence.detail


@pytest.mark.parametrize(
    ("column", "value"),
    [("reason", "REVISION_CONFLICT"), ("detail", "nothing to see"), ("job_id", "job_x")],
)
def test_an_edited_quarantined_record_is_named(mirror: Database, column: str, value: str) -> None:
    tamper(
        mirror, sql(f"UPDATE sync_quarantine SET {column} = :v WHERE chain_position = 1", v=value)
    )
    divergence = verify(mirror).divergence
    assert divergence is not None
    assert (divergence.kind, divergence.table, divergence.position, divergence.fields) == (
        mc.CHANGED,
        "sync_quarantine",
        1,
        (column,),
    )


def test_quarantined_bytes_repaired_or_deleted_are_found(mirror: Database) -> None:
    tamper(
        mirror, sql("UPDATE sync_quarantine SET raw_record = :v WHERE chain_position = 2", v=b"{}")
    )
    divergence = verify(mirror).divergence
    assert divergence is not None
    assert (divergence.table, divergence.position, divergence.fields) == (
        "sync_quarantine",
        2,
        ("raw_record",),
    )
    tamper(mirror, sql("DELETE FROM sync_quarantine WHERE chain_position = 1"))
    divergence = verify(mirror).divergence
    assert divergence is not None
    assert (divergence.kind, divergence.table, divergence.position) == (
        mc.DELETED,
        "sync_quarantine",
        2,
    )


def _add_checkpoint(db: Database, token: str) -> None:
    tamper(
        db,
        sql(
            "INSERT INTO audit_log (created_at, service, actor_kind, actor_name, method, "
            "resource_kind, resource_id, before_json, after_json, request_id, reason) VALUES "
            "(:t, 'registrysync', 'internal', 'x', 'm', 'sync_checkpoint', :r, '', :a, '', '')",
            t=NOW,
            r=REGION,
            a=json.dumps({"jws": token}),
        ),
    )


def test_a_checkpoint_signed_by_another_key_proves_nothing(mirror: Database) -> None:
    foreign_sign, _ = make_keys()
    _add_checkpoint(mirror, foreign_sign(b'{"region":"eu-west-1"}'))
    divergence = verify(mirror).divergence
    assert divergence is not None
    assert (divergence.kind, divergence.table) == (mc.UNVERIFIABLE_CHECKPOINT, "audit_log")
    assert "not accepted" in divergence.detail


def test_a_checkpoint_with_a_rewritten_payload_is_forged(mirror: Database) -> None:
    with mirror.read_engine.connect() as connection:
        stored = connection.execute(
            text("SELECT after_json FROM audit_log WHERE resource_kind = 'sync_checkpoint'")
        ).scalars()
        header, _, signature = json.loads(list(stored)[-1])["jws"].split(".")
    claims = {"region": REGION, "generation": 9, "cursor": "c_far", "synced": {}, "quarantine": {}}
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    _add_checkpoint(mirror, f"{header}.{body}.{signature}")
    divergence = verify(mirror).divergence
    assert divergence is not None
    assert (divergence.kind, divergence.table) == (mc.FORGED_CHECKPOINT, "audit_log")
    assert "signature does not verify" in divergence.detail


def test_a_forged_tail_row_is_not_signed_into_the_next_page(mirror: Database) -> None:
    """The next page chains on from the last signed checkpoint, not from the
    forged row, so the forgery still stands out after the sync has moved on."""
    payload = b'{"jobId":"job_forged"}'
    forged = _forged_after(
        mirror,
        10,
        sync_sequence=row_at(mirror, 10)["sync_sequence"] + 1,
        job_id="job_forged",
        canonical_payload=payload,
        canonical_payload_sha256=hashlib.sha256(payload).digest(),
        payload_size=len(payload),
    )
    tamper(mirror, _insert(forged))
    feed, more = records(2, start=10)
    mirror.write_sync(
        lambda s: commit_page(
            s, page(feed, more, 2, 12), NOW, postgres=mirror.is_postgres, sign=SIGN, keys=KEYS
        )
    )
    divergence = verify(mirror).divergence
    assert divergence is not None
    assert (divergence.kind, divergence.position, divergence.job_id) == (
        mc.INSERTED,
        11,
        "job_forged",
    )


def test_rows_chained_before_v2_verify_and_their_chain_goes_on_in_v2(db: Database) -> None:
    """Rows stored before the chain (registrysync_0001) are chained in v1 by
    registrysync_0002 and keep those links; the sync chains on in v2 after them,
    and verification checks each row in its own encoding, naming a changed v1 field."""
    config = migrate.alembic_config(db.write_engine)
    command.downgrade(config, "registrysync_0001")
    prepare(db)
    feed, items = records(6)
    legacy = [
        row_values(item, REGION, "swp_test", NOW)  # type: ignore[arg-type]
        for item in items[:4]
    ]
    with db.write_engine.begin() as connection:
        table = sa.table("synced_jobs", *(sa.column(name) for name in legacy[0]))
        connection.execute(sa.insert(table), legacy)
    command.upgrade(config, "heads")
    db.write_sync(
        lambda s: commit_page(
            s, page(feed, items[4:], 0, 6), NOW, postgres=db.is_postgres, sign=SIGN, keys=KEYS
        )
    )
    versions = [row_at(db, position)["chain_version"] for position in range(1, 7)]
    assert versions == [1, 1, 1, 1, 2, 2]
    report = verify(db)
    assert report.divergence is None
    assert report.synced_rows == 6
    with pytest.raises(RuntimeError, match="v2 encoding"):
        command.downgrade(config, "registrysync_0002")
    tamper(db, sql("UPDATE synced_jobs SET tenant_id = 'tenant_forged' WHERE chain_position = 2"))
    divergence = verify(db).divergence
    assert divergence is not None
    assert (divergence.kind, divergence.position, divergence.fields) == (
        mc.CHANGED,
        2,
        ("tenant_id",),
    )


def test_a_flipped_chain_version_is_named(mirror: Database) -> None:
    tamper(mirror, sql("UPDATE synced_jobs SET chain_version = 1 WHERE chain_position = 4"))
    divergence = verify(mirror).divergence
    assert divergence is not None
    assert (divergence.kind, divergence.position, divergence.fields) == (
        mc.CHANGED,
        4,
        ("chain_version",),
    )


def test_postgres_encodes_rows_as_the_sync_does(db: Database) -> None:
    """The server's encoding of a row (both versions) is chain.encoding's, byte for
    byte, for the values that are hardest to get right: non-ASCII text, empty
    strings, NULL timestamps, negative and extreme integers."""
    if not db.is_postgres:
        pytest.skip("SQLite rows are encoded in Python")
    prepare(db)
    _, items = records(1)
    row = row_values(items[0], REGION, "swp_test", NOW)  # type: ignore[arg-type]
    row.update(
        sync_sequence=-(2**63),
        chain_position=2**63 - 1,
        tenant_id="t\u00e9nant \u2603 \U0001f600",
        queue_id="",
        create_time_ns=None,
        update_time_ns=-1,
        synced_at=dt.datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=dt.UTC),
        chain=b"x",
        chain_version=2,
    )
    tamper(db, _insert(row))
    for version in (1, 2):
        encoding = mirror_reads.encoding_sql(SYNCED).replace("chain_version", str(version))
        with db.read_engine.connect() as connection:
            served = connection.execute(
                text(f"SELECT {encoding} FROM synced_jobs WHERE sync_sequence = :id"),
                {"id": row["sync_sequence"]},
            ).scalar_one()
        assert bytes(served) == chain.encoding(SYNCED, version, row_at(db, 2**63 - 1))


async def test_payload_bytes_are_checked_by_the_scheduled_pass(mirror: Database) -> None:
    """On demand (VerifyMirror) the chain is checked, which covers each payload's
    digest; the scheduled pass also hashes every payload against its digest."""
    tamper(
        mirror,
        sql("UPDATE synced_jobs SET canonical_payload = :v WHERE chain_position = 3", v=b"{}"),
    )
    verifier = MirrorVerifier(mirror, KEYS, [REGION])
    [(on_demand, _)] = await verifier.verify([REGION])
    assert on_demand.divergence is None
    [(scheduled, _)] = await verifier.verify([REGION], payloads=True)
    assert scheduled.divergence is not None
    assert (scheduled.divergence.position, scheduled.divergence.fields) == (
        3,
        ("canonical_payload",),
    )


def test_postgres_walks_a_clean_mirror_in_one_stream_and_names_a_change_after_it(
    mirror: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clean region is verified from the streamed rows alone (no server-side
    cursor); a changed row makes the walk read the stream to its end and walk
    again through cursors, in the same transaction, to name the field."""
    if not mirror.is_postgres:
        pytest.skip("SQLite rows are read through the ORM's connection")
    cursor_walks: list[str] = []
    cursor_links = mirror_reads._postgres_links

    def counted(session: Any, kind: chain.ChainKind, region: str, payloads: bool) -> Any:
        cursor_walks.append(kind.table)
        return cursor_links(session, kind, region, payloads)

    monkeypatch.setattr(mirror_reads, "_postgres_links", counted)
    assert verify(mirror).divergence is None
    assert cursor_walks == []

    tamper(mirror, sql("UPDATE synced_jobs SET node_id = 'node_forged' WHERE chain_position = 3"))
    divergence = verify(mirror).divergence
    assert divergence is not None
    assert (divergence.kind, divergence.position, divergence.fields) == (
        mc.CHANGED,
        3,
        ("node_id",),
    )
    assert cursor_walks == ["synced_jobs", "sync_quarantine"]
