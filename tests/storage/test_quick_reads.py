"""Quick reads (Core SQL compiled once, no ORM session) give what the ORM gives:
every column converted the same way (UTC datetimes, JSON, booleans, NULLs), on
SQLite and PostgreSQL, and nothing for a key that is not there, and a tenant
read so becomes the same message bytes as from the ORM; a point read on SQLite
never holds the event loop while the database is locked; on PostgreSQL a read
survives the loss of its connection and its connections close with the
database."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sqlite3

import psycopg
import pytest
from sqlalchemy import bindparam, inspect, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InvalidRequestError

from ppos.controlplane.common.v1 import resource_pb2 as common_pb
from ppos.controlplane.core.errors import InvalidArgument
from ppos.controlplane.core.timeutil import to_timestamp
from ppos.controlplane.governance.v1 import governance_service_pb2 as gov_pb
from ppos.controlplane.governance.v1 import resources_pb2 as res_pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as node_pb
from ppos.controlplane.services.governance.convert import fill_tenant, tenant_to_proto
from ppos.controlplane.services.governance.enums import TENANT_PHASE
from ppos.controlplane.services.governance.models import PartnerRow, TenantRow
from ppos.controlplane.services.governance.resources.store import tenants_after
from ppos.controlplane.services.node_registry.convert import fill_node, node_to_proto
from ppos.controlplane.services.node_registry.models import NodeRow
from ppos.controlplane.services.node_registry.rpc_operator import NODE_BY_ID
from ppos.controlplane.storage.database import Database
from ppos.controlplane.storage.loop_postgres import LoopConnections
from ppos.controlplane.storage.reads import PreparedRead, quick_reads
from tests.support.databases import _libpq

WHEN = dt.datetime(2026, 12, 5, 10, 30, 15, 123456, tzinfo=dt.UTC)


def _node(node_id: str, **overrides: object) -> NodeRow:
    fields: dict[str, object] = {
        "node_id": node_id,
        "region": "eu-west-1",
        "cluster": "c1",
        "hostname": "worker-1",
        "labels": {"tier": "edge", "zone": "b"},
        "capacity_slots": 8,
        "slots_in_use": 3,
        "schedulable": False,
        "unschedulable_reason": "rack move",
        "schedulable_transition_at": WHEN,
        "drain_deadline": None,
        "readiness": "READY",
        "readiness_reason": "HeartbeatReceived",
        "last_transition_at": WHEN,
        "last_heartbeat_at": WHEN + dt.timedelta(seconds=5),
        "container_image": "registry.example/ppos/preflight-worker:7.4.1",
        "container_digest": "sha256:" + "a" * 64,
        "registered": True,
        "credential_generation": 2,
        "resource_version": 7,
        "generation": 3,
        "created_at": WHEN - dt.timedelta(days=1),
        "updated_at": WHEN,
    }
    fields.update(overrides)
    return NodeRow(**fields)


def _tenant(tenant_id: str, phase: str, **overrides: object) -> TenantRow:
    fields: dict[str, object] = {
        "tenant_id": tenant_id,
        "display_name": tenant_id.title(),
        "default_region": "eu-west-1",
        "default_partner_id": None,
        "labels": {"tier": "gold"},
        "phase": phase,
        "reason": "",
        "resource_version": 1,
        "generation": 1,
        "created_at": WHEN,
        "updated_at": WHEN,
    }
    fields.update(overrides)
    return TenantRow(**fields)


def _tenant_built_whole(row: TenantRow) -> res_pb.Tenant:
    """A Tenant message made as one constructor call with nested messages: the
    reference `fill_tenant` must match byte for byte."""
    active = row.phase == "ACTIVE"
    return res_pb.Tenant(
        tenant_id=row.tenant_id,
        meta=common_pb.ObjectMeta(
            resource_version=str(row.resource_version),
            create_time=to_timestamp(row.created_at),
            update_time=to_timestamp(row.updated_at),
            labels={str(k): str(v) for k, v in (row.labels or {}).items()},
            generation=row.generation,
        ),
        spec=res_pb.TenantSpec(
            display_name=row.display_name,
            default_region=row.default_region,
            default_partner_id=row.default_partner_id or "",
        ),
        status=res_pb.TenantStatus(
            phase=TENANT_PHASE.to_proto(row.phase),
            reason=row.reason,
            conditions=[
                common_pb.Condition(
                    type="Accepting",
                    status=common_pb.CONDITION_STATUS_TRUE
                    if active
                    else common_pb.CONDITION_STATUS_FALSE,
                    reason="Active" if active else row.phase.capitalize(),
                    message=row.reason,
                    last_transition_time=to_timestamp(row.updated_at),
                )
            ],
        ),
    )


def _columns(row: object, model: type[object]) -> dict[str, object]:
    return {column.key: getattr(row, column.key) for column in inspect(model).columns}


async def test_quick_reads_give_what_the_orm_gives(database_url: str) -> None:
    db = Database(database_url, pool_size=2)
    try:
        db.write_sync(
            lambda s: s.add_all(
                [
                    _node("node-a"),
                    _node("node-b", schedulable=True, labels={}, last_heartbeat_at=None),
                    _tenant("t-1", "ACTIVE"),
                    _tenant("t-2", "SUSPENDED"),
                    _tenant("t-3", "ACTIVE"),
                ]
            )
        )
        reads = quick_reads(db)
        assert quick_reads(db) is reads
        for node_id in ("node-a", "node-b"):
            quick = await reads.first(NODE_BY_ID, node_id=node_id)
            orm = db.read_sync(lambda s, node_id=node_id: s.get(NodeRow, node_id))
            assert quick is not None
            assert orm is not None
            assert _columns(quick, NodeRow) == _columns(orm, NodeRow)
            assert quick.last_transition_at.tzinfo is not None
        assert await reads.first(NODE_BY_ID, node_id="node-missing") is None
        # Several reader threads at once, each on its own connection (SQLite).
        found = await asyncio.gather(
            *(reads.first(NODE_BY_ID, node_id="node-a") for _ in range(20))
        )
        assert {row.resource_version for row in found} == {7}

        everything = await reads.rows(tenants_after(0), after="", limit=10)
        assert [row.tenant_id for row in everything] == ["t-1", "t-2", "t-3"]
        orm_tenant = db.read_sync(lambda s: s.get(TenantRow, "t-1"))
        assert _columns(everything[0], TenantRow) == _columns(orm_tenant, TenantRow)
        active = await reads.rows(tenants_after(1), after="t-1", limit=10, phase_0="ACTIVE")
        assert [row.tenant_id for row in active] == ["t-3"]
        both = await reads.rows(
            tenants_after(2), after="", limit=2, phase_0="ACTIVE", phase_1="SUSPENDED"
        )
        assert [row.tenant_id for row in both] == ["t-1", "t-2"]
    finally:
        db.close()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_point_read_on_a_locked_sqlite_file_is_done_in_the_pool(database_url: str) -> None:
    """SQLite only: the event loop's own connection (PostgreSQL reads stay in the pool).

    Another connection holds the file exclusively; the point read tried on the
    loop finds it busy and is done in a reader thread instead, which waits for
    the lock while the loop runs the callback that releases it: the read
    answers with the row as committed, not "database is locked"."""
    seeding = Database(database_url, pool_size=1)
    seeding.write_sync(lambda s: s.add(_node("node-a")))
    seeding.close()
    holder = sqlite3.connect(str(make_url(database_url).database), isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("UPDATE nodes SET slots_in_use = 5 WHERE node_id = 'node-a'")
    released: list[bool] = []

    def release() -> None:
        holder.execute("COMMIT")
        holder.execute("PRAGMA locking_mode=NORMAL")
        holder.execute("SELECT 1").fetchall()  # drops the exclusive lock
        holder.close()
        released.append(True)

    db = Database(database_url, pool_size=1)
    try:
        asyncio.get_running_loop().call_later(0.2, release)
        row = await quick_reads(db).first(NODE_BY_ID, node_id="node-a")
        assert released == [True]
        assert row is not None
        assert row.slots_in_use == 5
    finally:
        db.close()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_quick_read_after_the_database_ended_its_sessions_gets_a_new_one(
    database_url: str,
) -> None:
    """PostgreSQL only (SQLite has no server to lose): the server ends every session,
    the quick read's own connection and the pool's; the next quick read finds its
    connection lost and answers on a fresh one (a read is safe to repeat), and the
    pool's connections stay out of autocommit (a write still commits as a
    transaction)."""
    db = Database(database_url, pool_size=1)
    try:
        db.write_sync(lambda s: s.add(_node("node-a")))
        reads = quick_reads(db)
        assert (await reads.first(NODE_BY_ID, node_id="node-a")) is not None
        with psycopg.connect(_libpq(database_url), autocommit=True) as admin:
            ended = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
        assert ended
        row = await reads.first(NODE_BY_ID, node_id="node-a")
        assert row is not None
        assert row.node_id == "node-a"
        in_autocommit = db.read_sync(
            lambda s: s.connection().connection.driver_connection.autocommit
        )
        assert in_autocommit is False
    finally:
        db.close()


async def test_a_value_the_database_refuses_is_a_domain_error(
    database_url: str, backend: str
) -> None:
    """A NUL in a key: SQLite compares it (no such node), PostgreSQL refuses it, and
    the read answers as a session's read does (INVALID_ARGUMENT), never INTERNAL."""
    db = Database(database_url, pool_size=1)
    try:
        reads = quick_reads(db)
        if backend == "sqlite":
            assert await reads.first(NODE_BY_ID, node_id="node\x00a") is None
        else:
            with pytest.raises(InvalidArgument) as refused:
                await reads.first(NODE_BY_ID, node_id="node\x00a")
            assert refused.value.reason == "UNSTORABLE_VALUE"
    finally:
        db.close()


async def test_a_tenant_page_read_quickly_is_the_message_the_orm_row_makes(
    database_url: str,
) -> None:
    """Every phase, labels or none, a default partner or none, a reason or none,
    generation 0, timestamps with and without microseconds: the page ListTenants
    builds in place from quick-read rows has the bytes of one built from the ORM's
    rows with whole-message constructors."""
    later = WHEN + dt.timedelta(hours=3, microseconds=-WHEN.microsecond)
    tenants = [
        _tenant("t-1", "ACTIVE"),
        _tenant("t-2", "SUSPENDED", reason="unpaid \u00e9t\u00e9", labels={}),
        _tenant("t-3", "RETIRED", default_partner_id="p-1", display_name="", generation=0),
        _tenant("t-4", "ACTIVE", labels={"b": "2", "a": "1"}, updated_at=later),
        _tenant("t-5", "SUSPENDED", default_region="", resource_version=10**12),
    ]
    db = Database(database_url, pool_size=2)
    try:
        db.write_sync(
            lambda s: s.add(
                PartnerRow(partner_id="p-1", region="eu", created_at=WHEN, updated_at=WHEN)
            )
        )
        db.write_sync(lambda s: s.add_all(tenants))
        rows = await quick_reads(db).rows(tenants_after(0), after="", limit=10)
        orm_rows = db.read_sync(
            lambda s: list(s.scalars(select(TenantRow).order_by(TenantRow.tenant_id)))
        )
        assert len(rows) == len(orm_rows) == len(tenants)

        quick_page = gov_pb.ListTenantsResponse()
        for row in rows:
            fill_tenant(quick_page.tenants.add(), row)
        whole_page = gov_pb.ListTenantsResponse(tenants=[_tenant_built_whole(r) for r in orm_rows])
        assert quick_page.SerializeToString() == whole_page.SerializeToString()
        assert quick_page == whole_page
        for quick, orm in zip(rows, orm_rows, strict=True):
            assert tenant_to_proto(quick) == tenant_to_proto(orm) == _tenant_built_whole(orm)
    finally:
        db.close()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_the_connections_of_quick_reads_close_with_the_database(database_url: str) -> None:
    """PostgreSQL only: each reader thread keeps a connection of its own outside the
    pool; closing the database closes them, so none is left on the server."""
    db = Database(database_url, pool_size=2)
    admin = psycopg.connect(_libpq(database_url), autocommit=True)
    try:

        def sessions() -> int:
            found = admin.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
            assert found is not None
            return int(found[0])

        db.write_sync(lambda s: s.add(_node("node-a")))
        reads = quick_reads(db)
        await asyncio.gather(*(reads.first(NODE_BY_ID, node_id="node-a") for _ in range(8)))
        assert sessions() >= 1
        db.close()
        # A closed session's backend leaves pg_stat_activity a moment after the client.
        for _ in range(100):
            if sessions() == 0:
                break
            await asyncio.sleep(0.05)
        assert sessions() == 0
    finally:
        db.close()
        admin.close()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_postgres_quick_reads_share_a_few_event_loop_connections(database_url: str) -> None:
    """PostgreSQL only: reads run on the event loop's own connections, at most the
    pool's size of them however many reads are under way; a read cancelled while
    it waits leaves them usable, and a write is seen by the next read."""
    db = Database(database_url, pool_size=2)
    admin = psycopg.connect(_libpq(database_url), autocommit=True)
    try:

        def sessions() -> int:
            found = admin.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
            assert found is not None
            return int(found[0])

        db.write_sync(lambda s: s.add(_node("node-a")))
        before = sessions()  # the engine's pooled connection(s), used by the write
        reads = quick_reads(db)
        found = await asyncio.gather(
            *(reads.first(NODE_BY_ID, node_id="node-a") for _ in range(30))
        )
        assert {row.node_id for row in found} == {"node-a"}
        assert sessions() - before == 2

        slow = [asyncio.ensure_future(reads.first(NODE_BY_ID, node_id="node-a")) for _ in range(6)]
        await asyncio.sleep(0)
        for task in slow[3:]:
            task.cancel()
        done = await asyncio.gather(*slow, return_exceptions=True)
        assert sum(isinstance(item, asyncio.CancelledError) for item in done) <= 3
        assert all(item.node_id == "node-a" for item in done if not isinstance(item, BaseException))

        db.write_sync(lambda s: s.add(_node("node-b")))
        row = await reads.first(NODE_BY_ID, node_id="node-b")
        assert row is not None
        assert sessions() - before <= 2
    finally:
        db.close()
        admin.close()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_reads_waiting_for_a_busy_connection_share_one_statement_sent_after_them(
    database_url: str,
) -> None:
    """PostgreSQL only: while every connection is busy, reads of the same statement
    and parameters share one statement, sent after all of them arrived (so all
    see a write committed while they waited); a caller that gives up leaves
    the others their rows; a read with other parameters runs on its own."""
    db = Database(database_url, pool_size=1)
    admin = psycopg.connect(_libpq(database_url), autocommit=True)
    try:
        db.write_sync(lambda s: s.add(_node("node-a", labels={"v": "1"})))
        engine = db.read_engine
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        connections = LoopConnections((args, dict(kwargs)), size=1)

        def error(exc: psycopg.Error, _lost: bool) -> Exception:
            return RuntimeError(str(exc))

        sql = "SELECT labels::text, clock_timestamp() FROM nodes WHERE node_id = %(node_id)s"
        # The holder keeps the only connection until the admin lets go of the lock.
        admin.execute("SELECT pg_advisory_lock(4242)")
        held = "SELECT pg_advisory_lock(4242), pg_advisory_unlock(4242)"
        holder = asyncio.ensure_future(connections.fetch(held, None, error))
        await asyncio.sleep(0.1)
        waiting = [
            asyncio.ensure_future(connections.fetch(sql, {"node_id": "node-a"}, error))
            for _ in range(5)
        ]
        other = asyncio.ensure_future(connections.fetch(sql, {"node_id": "node-b"}, error))
        await asyncio.sleep(0.01)
        waiting[0].cancel()

        def relabel(session: object) -> None:
            row = session.get(NodeRow, "node-a")  # type: ignore[attr-defined]
            row.labels = {"v": "2"}

        await asyncio.get_running_loop().run_in_executor(None, lambda: db.write_sync(relabel))
        assert not any(task.done() for task in waiting[1:])
        admin.execute("SELECT pg_advisory_unlock(4242)")
        results = await asyncio.gather(*waiting[1:])
        assert waiting[0].cancelled()
        assert len({tuple(rows[0]) for rows in results}) == 1  # one statement's row
        assert json.loads(results[0][0][0]) == {"v": "2"}  # sent after the write
        assert await other == []
        await holder
        connections.close()
    finally:
        db.close()
        admin.close()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_hot_read_waits_for_its_window_and_shares_one_statement_sent_after_them(
    database_url: str,
) -> None:
    """PostgreSQL only: a read whose same statement was sent less than the
    coalescing window ago waits until the window has passed since that send
    (by the database's own clock), and goes as one statement with every
    identical read arriving meanwhile, so all see a write committed while they
    waited; a read with other parameters, cold, goes at once and alone."""
    window = 0.3
    db = Database(database_url, pool_size=2)
    try:
        db.write_sync(lambda s: s.add(_node("node-a", labels={"v": "1"})))
        engine = db.read_engine
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        connections = LoopConnections((args, dict(kwargs)), size=2, coalesce_window=window)

        def error(exc: psycopg.Error, _lost: bool) -> Exception:
            return RuntimeError(str(exc))

        sql = (
            "SELECT labels::text, extract(epoch FROM clock_timestamp())::float8 "
            "FROM nodes WHERE node_id = %(node_id)s"
        )
        first = await connections.fetch(sql, {"node_id": "node-a"}, error)
        hot = [
            asyncio.ensure_future(connections.fetch(sql, {"node_id": "node-a"}, error))
            for _ in range(4)
        ]
        cold = await asyncio.wait_for(
            connections.fetch(sql, {"node_id": "node-b"}, error), timeout=window / 2
        )
        assert cold == []
        assert not any(task.done() for task in hot)

        def relabel(session: object) -> None:
            row = session.get(NodeRow, "node-a")  # type: ignore[attr-defined]
            row.labels = {"v": "2"}

        await asyncio.get_running_loop().run_in_executor(None, lambda: db.write_sync(relabel))
        results = await asyncio.gather(*hot)
        assert len({tuple(rows[0]) for rows in results}) == 1  # one statement's row
        labels, sent_at = results[0][0]
        assert json.loads(labels) == {"v": "2"}  # sent after the write
        assert sent_at - first[0][1] >= window * 0.9  # the window, less the clocks' grain
        connections.close()
    finally:
        db.close()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest.mark.parametrize(("window", "statements"), [(0.0, 4), (0.05, 2)])
async def test_the_same_reads_at_once_share_a_statement_only_within_a_window(
    database_url: str, window: float, statements: int
) -> None:
    """PostgreSQL only: four identical reads at once on four idle connections
    are four statements without a window; with one, the first goes at once and
    the other three, hot, share the next."""
    db = Database(database_url, pool_size=4, read_coalesce_window=window)
    try:
        db.write_sync(lambda s: s.add(_node("node-a")))
        engine = db.read_engine
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        connections = LoopConnections((args, dict(kwargs)), size=4, coalesce_window=window)

        def error(exc: psycopg.Error, _lost: bool) -> Exception:
            return RuntimeError(str(exc))

        sql = "SELECT clock_timestamp() FROM nodes WHERE node_id = %(node_id)s"
        seen = await asyncio.gather(
            *(connections.fetch(sql, {"node_id": "node-a"}, error) for _ in range(4))
        )
        assert len({rows[0][0] for rows in seen}) == statements
        connections.close()
    finally:
        db.close()


async def test_a_node_read_quickly_and_filled_in_place_is_the_message_the_orm_row_makes(
    database_url: str,
) -> None:
    """Ready, stale, never heartbeated, cordoned, draining with a deadline, labels or
    none: GetNode's reply filled in place from a quick-read row has the bytes of
    `node_to_proto` of the ORM's row."""
    later = WHEN + dt.timedelta(hours=2, microseconds=-WHEN.microsecond)
    nodes = [
        _node("node-a"),
        _node("node-b", schedulable=True, labels={}, last_heartbeat_at=None),
        _node("node-c", readiness="NOT_READY", readiness_reason="HeartbeatStale"),
        _node("node-d", readiness="DRAINING", drain_deadline=later, schedulable_transition_at=None),
        _node("node-e", labels={"b": "2", "a": "1"}, unschedulable_reason="", generation=0),
    ]
    db = Database(database_url, pool_size=2)
    try:
        db.write_sync(lambda s: s.add_all(nodes))
        for node in nodes:
            quick = await quick_reads(db).first(NODE_BY_ID, node_id=node.node_id)
            orm = db.read_sync(lambda s, node_id=node.node_id: s.get(NodeRow, node_id))
            assert quick is not None
            assert orm is not None
            filled = node_pb.GetNodeResponse()
            fill_node(filled.node, quick)
            whole = node_pb.GetNodeResponse(node=node_to_proto(orm))
            assert filled.SerializeToString() == whole.SerializeToString()
            assert filled == whole
    finally:
        db.close()


async def test_a_converted_read_makes_each_stored_row_once_and_anew_when_it_changes(
    database_url: str,
) -> None:
    """GetNode's and ListTenants' encoded replies are kept by the row's raw values:
    the same row read again is the same product (the bytes of the reply built
    from `node_to_proto` / `tenant_to_proto` of the ORM's row), a row changed in
    any column (here only its labels, a JSON value read as its text) is made anew."""
    db = Database(database_url, pool_size=2)
    try:
        db.write_sync(lambda s: s.add_all([_node("node-m"), _tenant("t-m", "ACTIVE")]))
        reads = quick_reads(db)
        first = await reads.converted(NODE_BY_ID, node_id="node-m")
        again = await reads.converted(NODE_BY_ID, node_id="node-m")
        assert len(first) == 1
        assert again[0] is first[0]
        orm = db.read_sync(lambda s: s.get(NodeRow, "node-m"))
        whole = node_pb.GetNodeResponse(node=node_to_proto(orm))
        assert first[0].data == whole.SerializeToString()

        def relabel(session: object) -> None:
            row = session.get(NodeRow, "node-m")  # type: ignore[attr-defined]
            row.labels = {"tier": "edge", "zone": "c"}

        db.write_sync(relabel)
        changed = await reads.converted(NODE_BY_ID, node_id="node-m")
        assert changed[0] is not first[0]
        reply = node_pb.GetNodeResponse.FromString(changed[0].data)
        assert dict(reply.node.meta.labels) == {"tier": "edge", "zone": "c"}
        assert await reads.converted(NODE_BY_ID, node_id="node-none") == []

        tenants = await reads.converted(tenants_after(0), after="", limit=10)
        assert [t.tenant_id for t in tenants] == ["t-m"]
        orm_tenant = db.read_sync(lambda s: s.get(TenantRow, "t-m"))
        listed = gov_pb.ListTenantsResponse(tenants=[tenant_to_proto(orm_tenant)])
        assert tenants[0].entry == listed.SerializeToString()
        assert (await reads.converted(tenants_after(0), after="", limit=10))[0] is tenants[0]
    finally:
        db.close()


async def test_a_converted_read_keeps_at_most_its_memo_size_dropping_the_oldest(
    database_url: str,
) -> None:
    made: list[str] = []

    def convert(row: NodeRow) -> str:
        made.append(row.node_id)
        return row.node_id

    nodes = NodeRow.__table__
    by_id = PreparedRead(
        select(nodes).where(nodes.c.node_id == bindparam("node_id")), convert=convert, memo_size=2
    )
    db = Database(database_url, pool_size=2)
    try:
        db.write_sync(lambda s: s.add_all([_node("node-1"), _node("node-2"), _node("node-3")]))
        reads = quick_reads(db)
        for node_id in ("node-1", "node-2", "node-1", "node-3", "node-2", "node-1"):
            assert await reads.converted(by_id, node_id=node_id) == [node_id]
        # node-3 drops node-1 (the oldest kept), node-1 again drops node-2.
        assert made == ["node-1", "node-2", "node-3", "node-1"]
    finally:
        db.close()


@pytest.mark.parametrize("phases", [0, 2])
def test_read_parameters_are_what_sqlalchemy_makes_of_the_same_values(phases: int) -> None:
    """Parameters are filled from a plan worked out once per statement (not by
    `construct_params` per read): the same values in the same places, for
    both drivers; a value missing is SQLAlchemy's own error; a statement the
    plan does not cover (an expanding IN) goes through `construct_params`."""
    tenants = TenantRow.__table__
    expanding = PreparedRead(
        select(tenants).where(tenants.c.phase.in_(bindparam("p", expanding=True)))
    )
    values = {"after": "tenant-003", "limit": 11, "node_id": "node_1"}
    values |= {f"phase_{index}": f"PHASE{index}" for index in range(phases)}
    for dialect in (sqlite.dialect(), postgresql.dialect()):
        for read in (NODE_BY_ID, tenants_after(phases)):
            compiled = read.compiled(dialect)
            expected = compiled._compiled.construct_params(dict(values))
            if compiled._positional:
                assert compiled.parameters(values) == tuple(expected[n] for n in compiled._names)
            else:
                assert compiled.parameters(values) == expected
            with pytest.raises(InvalidRequestError, match="A value is required"):
                compiled.parameters({})
        assert expanding.compiled(dialect)._binds is None
