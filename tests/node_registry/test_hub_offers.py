"""The watch hub applies the changes its own process committed as they were handed
over, and reads the change log only for what nobody handed over: a gap, a NOTIFY
from elsewhere, a set-based sweep. What a subscriber receives is the same either
way, byte for byte the log's event, in version order, each version once.

In-process: a real WatchHub on a real database (both backends). `LogReads` is
that Database, counting the hub's reads of the change log.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import re
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import event, insert, select
from sqlalchemy.orm import Session

from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.security.principal import Principal, PrincipalKind
from ppos.controlplane.services.node_registry import hub as hub_module
from ppos.controlplane.services.node_registry.changelog import (
    Change,
    LoggedEvent,
    logged_events,
    record_changes,
)
from ppos.controlplane.services.node_registry.filters import NodeQuery
from ppos.controlplane.services.node_registry.heartbeats import HeartbeatBatcher
from ppos.controlplane.services.node_registry.hub import WatchHub
from ppos.controlplane.services.node_registry.models import NodeEventRow, NodeRow
from ppos.controlplane.services.node_registry.settings import NodeRegistrySettings
from ppos.controlplane.services.node_registry.watch_log import read_tail
from ppos.controlplane.services.node_registry.watch_subscribers import Subscriber
from ppos.controlplane.storage.database import Database

T = TypeVar("T")
NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
NODES = [f"node_{i:026d}" for i in range(3)]
MODIFIED = pb.WATCH_EVENT_TYPE_MODIFIED


class LogReads(Database):
    """A real Database that counts how often the hub reads the change log."""

    def __init__(self, url: str) -> None:
        super().__init__(url, pool_size=4)
        self.tail_reads = 0

    async def read(self, work: Callable[[Session], T]) -> T:
        if isinstance(work, functools.partial) and work.func is read_tail:
            self.tail_reads += 1
        return await super().read(work)


def _seed(session: Session) -> None:
    session.execute(
        insert(NodeRow),
        [
            {
                "node_id": node_id,
                "region": "eu-west-1",
                "cluster": "c1",
                "hostname": node_id,
                "labels": {"tier": "edge"},
                "capacity_slots": 8,
                "readiness": "READY",
                "readiness_reason": "HeartbeatReady",
                "last_transition_at": NOW,
                "last_heartbeat_at": NOW,
                "registered": True,
                "credential_generation": 1,
                "resource_version": 0,
                "created_at": NOW,
                "updated_at": NOW,
            }
            for node_id in NODES
        ],
    )


def _change_slots(node_id: str, slots: int, session: Session) -> list[LoggedEvent]:
    """A committed-by-a-writer change, as the heartbeat path makes it."""
    row = session.scalars(select(NodeRow).where(NodeRow.node_id == node_id).with_for_update()).one()
    row.slots_in_use = slots
    record_changes(session, [Change(row, "SlotsChanged", row.readiness)], NOW)
    return logged_events(session)


async def _commit_slots(db: Database, node_id: str, slots: int) -> list[LoggedEvent]:
    """Commit a change to `node_id`; the events its transaction logged."""
    return await db.write(functools.partial(_change_slots, node_id, slots))


def _logged_payload(version: int, session: Session) -> bytes:
    payload = session.scalars(
        select(NodeEventRow.payload).where(NodeEventRow.event_id == version)
    ).one()
    assert payload is not None
    return bytes(payload)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[LogReads]:
    database = LogReads(database_url)
    database.write_sync(_seed)
    yield database
    database.close()


@pytest.fixture
async def hub(db: LogReads) -> AsyncIterator[WatchHub]:
    # No poll during a test (an hour), no coalescing delay.
    settings = NodeRegistrySettings(watch_poll_interval=3600.0, watch_flush_interval=0.0)  # type: ignore[arg-type]
    watch_hub = WatchHub(db, settings, asyncio.Event())
    await watch_hub.start()
    yield watch_hub
    await watch_hub.stop()


async def _subscriber(hub: WatchHub) -> Subscriber:
    return await hub.subscribe(NodeQuery(), 0, 10.0, None, "req_test")


async def _reaches(hub: WatchHub, version: int) -> None:
    async with asyncio.timeout(10):
        while hub.head_version < version:
            await hub.wait_tick()  # each publish, and an idle tick every second


async def _quiet(hub: WatchHub) -> None:
    """Long enough for the hub to act on a wake-up (it has no delay configured)."""
    await asyncio.sleep(0.3)


def _events(hub: WatchHub, sub: Subscriber) -> list[Any]:
    blob = hub.collect(sub)
    return [] if blob is None else list(pb.WatchNodesResponse.FromString(blob).events)


async def test_an_offered_change_is_published_without_reading_the_log(
    db: LogReads, hub: WatchHub
) -> None:
    sub = await _subscriber(hub)
    reads = db.tail_reads
    logged = await _commit_slots(db, NODES[0], 3)
    hub.offer(logged)
    await _reaches(hub, logged[-1][0])

    assert db.tail_reads == reads
    events = _events(hub, sub)
    assert [(e.type, e.resource_version, e.node.node_id) for e in events] == [
        (MODIFIED, logged[0][0], NODES[0])
    ]
    assert events[0].node.status.slots_in_use == 3
    # The subscriber is done with the publish: the fan-out's time is recorded.
    fanouts = REGISTRY.get_sample_value("ppos_watch_fanout_seconds_count") or 0.0
    hub.settle(sub)
    assert REGISTRY.get_sample_value("ppos_watch_fanout_seconds_count") == fanouts + 1
    # The very bytes the change log holds for that version.
    stored = await db.read(functools.partial(_logged_payload, logged[0][0]))
    assert events[0].node.SerializeToString() == stored
    assert node_pb2.Node.FromString(stored) == events[0].node


async def test_a_gap_before_an_offer_is_read_from_the_log_in_order(
    db: LogReads, hub: WatchHub
) -> None:
    sub = await _subscriber(hub)
    reads = db.tail_reads
    unoffered = await _commit_slots(db, NODES[1], 4)
    offered = await _commit_slots(db, NODES[2], 5)
    hub.offer(offered)
    await _reaches(hub, offered[-1][0])

    assert db.tail_reads > reads
    events = _events(hub, sub)
    assert [(e.resource_version, e.node.node_id) for e in events] == [
        (unoffered[0][0], NODES[1]),
        (offered[0][0], NODES[2]),
    ]
    # Handed over again, or late: nothing is delivered twice, nothing is read.
    reads = db.tail_reads
    hub.offer(offered + unoffered)
    await _quiet(hub)
    assert _events(hub, sub) == []
    assert db.tail_reads == reads


async def test_notifications_read_the_log_only_beyond_the_head(db: LogReads, hub: WatchHub) -> None:
    sub = await _subscriber(hub)
    head = hub.head_version
    reads = db.tail_reads
    hub.notified(str(head))  # our own commit's NOTIFY, already applied
    await _quiet(hub)
    assert db.tail_reads == reads

    elsewhere = await _commit_slots(db, NODES[0], 6)
    hub.notified(str(elsewhere[-1][0]))  # another replica's commit
    await _reaches(hub, elsewhere[-1][0])
    assert db.tail_reads == reads + 1
    assert [e.resource_version for e in _events(hub, sub)] == [elsewhere[0][0]]

    swept = await _commit_slots(db, NODES[1], 7)
    hub.notified("")  # a set-based sweep or a reconnected listener: no version
    await _reaches(hub, swept[-1][0])
    assert db.tail_reads == reads + 2
    assert [e.resource_version for e in _events(hub, sub)] == [swept[0][0]]


async def test_a_heartbeat_batch_is_a_fixed_number_of_round_trips(
    db: LogReads, hub: WatchHub
) -> None:
    """Whatever its size: lock nodes, lock commands, version lock, draw versions
    (and NOTIFY, PostgreSQL), write the nodes, log the events; then commit. The
    batch hands its events to the hub, which does not read them back."""
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    sub = await _subscriber(hub)
    reads = db.tail_reads
    event.listen(db.write_engine, "before_cursor_execute", seen)
    batcher = HeartbeatBatcher(db, hub.offer)
    try:
        answers = await asyncio.gather(
            *(
                batcher.submit(
                    Principal(PrincipalKind.NODE, node_id, credential_generation=1),
                    pb.HeartbeatRequest(ready=True, slots_in_use=2),
                )
                for node_id in NODES
            )
        )
    finally:
        event.remove(db.write_engine, "before_cursor_execute", seen)
    versions = sorted(int(node.meta.resource_version) for node, _commands in answers)
    assert len(versions) == len(NODES)
    await _reaches(hub, versions[-1])
    assert [e.resource_version for e in _events(hub, sub)] == versions
    assert db.tail_reads == reads
    begin = [] if db.is_postgres else ["BEGIN"]  # psycopg sends its BEGIN itself
    lock = ["version lock"] if db.is_postgres else []  # SQLite: one writer already
    assert [_statement_kind(s) for s in statements] == [
        *begin,
        "SELECT nodes",
        "SELECT node_commands",
        *lock,
        "draw versions",
        "UPDATE nodes",
        "INSERT node_events",
    ], [(_statement_kind(s), s[:150]) for s in statements]


def _statement_kind(statement: str) -> str:
    words = statement.split()
    if words[0] in ("UPDATE", "BEGIN"):
        return " ".join(words[:2]) if words[0] == "UPDATE" else "BEGIN"
    if words[0] == "INSERT":
        return f"INSERT {words[2]}"
    if "pg_advisory_xact_lock" in statement:
        return "version lock"
    if "nextval" in statement or "sqlite_sequence" in statement:
        return "draw versions"
    found = re.search(r"\bFROM (\w+)", statement)
    return f"SELECT {found.group(1) if found else statement}"


async def test_changes_past_the_byte_budget_do_not_wait_for_the_paced_interval(
    db: LogReads, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fan-out slowed by bytes must not stretch the flush interval and so grow
    the next messages (which fed on itself): below `watch_flush_bytes` the hub
    waits out the paced interval, past it the changes go out at once."""
    monkeypatch.setattr(hub_module, "MAX_FLUSH_INTERVAL", 60.0)
    node_bytes = len(_encoded_node(await _commit_slots(db, NODES[0], 1)))
    settings = NodeRegistrySettings(  # type: ignore[arg-type]
        watch_poll_interval=3600.0, watch_flush_interval=0.0, watch_flush_bytes=2 * node_bytes + 1
    )
    paced = WatchHub(db, settings, asyncio.Event())
    await paced.start()
    try:
        sub = await _subscriber(paced)
        first = await _commit_slots(db, NODES[0], 2)
        paced.offer(first)
        await _reaches(paced, first[-1][0])  # published: the pacing starts from here
        assert [e.resource_version for e in _events(paced, sub)] == [first[0][0]]
        paced.settle(sub)  # done with it: the next publish waits for no fan-out
        paced._subs.fanout_seconds = 40.0  # the last fan-out was slow: a paced interval of 60 s
        assert paced.flush_interval == 60.0
        assert paced.min_flush_interval < 0.01

        small = await _commit_slots(db, NODES[1], 3) + await _commit_slots(db, NODES[2], 4)
        paced.offer(small)  # two nodes' bytes: below the budget
        await asyncio.sleep(1.0)
        assert paced.head_version == first[-1][0]

        past = await _commit_slots(db, NODES[0], 5)
        paced.offer(past)  # a third: past the budget, published without the 60 s
        async with asyncio.timeout(20):
            await _reaches(paced, past[-1][0])
        events = _events(paced, sub)
        assert [e.resource_version for e in events] == [
            small[0][0],
            small[1][0],
            past[0][0],
        ]
        assert paced._pending_bytes == 0
    finally:
        await paced.stop()


def _encoded_node(logged: list[LoggedEvent]) -> bytes:
    return logged[-1][3]
