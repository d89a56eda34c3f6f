"""Outbox leases between replicas in one process: a lease that passed to another
replica fences every write of the one that lost it; a clean stop hands leases
back at once. (Real processes killed, stopped and frozen: test_outbox_takeover.py.)"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from typing import Any

from prometheus_client import REGISTRY
from sqlalchemy import text, update

from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.controlplane.runtime.composition import governance_deps
from ppos.controlplane.services.governance.models import OutboxRow
from ppos.controlplane.services.governance.outbox.dispatcher import Dispatcher
from ppos.controlplane.services.governance.outbox.receivers import Receivers
from tests.governance.conftest import Governed, StartGoverned
from tests.governance.support import count, eventually

# No dispatcher in the plane itself: the test's dispatchers are the replicas.
NO_DISPATCHER = {"PPOS_GOVERNANCE_BACKGROUND": "admin-jobs", "PPOS_OUTBOX_LEASE": "1500ms"}


async def _tenant(gov: Governed, queues: int) -> None:
    await gov.operator.ProvisionTenant(
        pb.ProvisionTenantRequest(
            request_id="prov-acme",
            tenant_id="acme",
            spec=res.TenantSpec(default_region="eu-west-1"),
            queues=[
                pb.QueueTemplate(queue_id=f"queue-{i}", spec=res.QueueSpec(capacity=i + 1))
                for i in range(queues)
            ],
        )
    )


def _rows(gov: Governed) -> list[tuple[Any, ...]]:
    def work(session: Any) -> list[tuple[Any, ...]]:
        return [
            tuple(row)
            for row in session.execute(
                text(
                    "SELECT command_id, state, lease_owner, attempts, receiver_command_id, "
                    "receiver_duplicate, last_error, updated_at FROM outbox_commands "
                    "ORDER BY command_id"
                )
            )
        ]

    rows: list[tuple[Any, ...]] = gov.runtime.db.read_sync(work)
    return rows


def _fenced(write: str) -> float:
    value = REGISTRY.get_sample_value("ppos_outbox_fenced_writes_total", {"write": write})
    return value or 0.0


def _dispatcher(gov: Governed, receivers: Receivers, owner: str) -> Dispatcher:
    return Dispatcher(governance_deps(gov.runtime), receivers, owner=owner)


async def test_a_replica_whose_lease_passed_on_writes_nothing(
    start_governed: StartGoverned,
) -> None:
    gov = await start_governed(NO_DISPATCHER)
    sim = gov.gateway()
    sim.faults.slow_ack_seconds = 2.5  # acted on at once, answered late
    await _tenant(gov, queues=1)
    receivers = Receivers(governance_deps(gov.runtime))
    stale = _dispatcher(gov, receivers, "replica-stale")
    outcomes, renewals = _fenced("outcome"), _fenced("renew")
    stop = asyncio.Event()
    running = asyncio.create_task(stale.run(stop))
    try:
        await eventually(lambda: sim.in_flight, lambda n: n == 1)
        # Another replica leases the command as if the stale one had frozen past its
        # lease: its lease expired, then the other's claim.
        sim.faults.slow_ack_seconds = 0.0
        gov.runtime.db.write_sync(
            lambda s: s.execute(
                update(OutboxRow)
                .where(OutboxRow.state == "SENT")
                .values(
                    lease_owner="replica-new",
                    attempts=OutboxRow.attempts + 1,
                    lease_expires_at=utcnow() + dt.timedelta(hours=1),
                )
            )
        )
        taken = _rows(gov)
        # The stale replica's call is answered; its acknowledgement and its lease
        # renewal are refused by the fence, counted, and change nothing.
        await eventually(lambda: _fenced("outcome"), lambda n: n == outcomes + 1, within=10)
        assert _fenced("renew") == renewals + 1
        assert _rows(gov) == taken
        assert count(gov.runtime, "audit_log", "method LIKE 'outbox:%'") == 0
        assert stale.acknowledged == 0
    finally:
        stop.set()
        await running
        await receivers.close()
    (row,) = taken
    assert row[1:4] == ("SENT", "replica-new", 2)


async def test_a_clean_stop_hands_leases_back_and_another_replica_delivers_them_once(
    start_governed: StartGoverned,
) -> None:
    gov = await start_governed(NO_DISPATCHER)
    sim = gov.gateway()
    sim.faults.slow_ack_seconds = 5.0
    await _tenant(gov, queues=3)
    receivers = Receivers(governance_deps(gov.runtime))
    first = _dispatcher(gov, receivers, "replica-first")
    stop_first = asyncio.Event()
    running = asyncio.create_task(first.run(stop_first))
    await eventually(lambda: sim.in_flight, lambda n: n == 3)
    sim.faults.slow_ack_seconds = 0.0
    loop = asyncio.get_running_loop()
    stopped_at = loop.time()
    stop_first.set()
    await running
    handed_back = loop.time() - stopped_at
    assert handed_back < 2.0, f"leases handed back after {handed_back:.2f} s"
    rows = _rows(gov)
    assert [(r[1], r[2], r[3]) for r in rows] == [("PENDING", "", 1)] * 3
    second = _dispatcher(gov, receivers, "replica-second")
    stop_second = asyncio.Event()
    running = asyncio.create_task(second.run(stop_second))
    try:
        await eventually(
            lambda: count(gov.runtime, "outbox_commands", "state = 'ACKNOWLEDGED'"),
            lambda n: n == 3,
        )
    finally:
        stop_second.set()
        await running
        await receivers.close()
    applied = Counter(c.idempotency_key for c in sim.applied())
    assert len(applied) == 3
    assert set(applied.values()) == {1}, "each command acted on once"
    resent = Counter(c.idempotency_key for c in sim.calls if c.outcome == "duplicate")
    assert resent == applied, "each resent under its own key, answered as a duplicate"
    assert [(r[1], r[3], r[5]) for r in _rows(gov)] == [("ACKNOWLEDGED", 2, True)] * 3
