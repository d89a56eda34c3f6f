"""Queues created and resized (and their tenants suspended and resumed) concurrently
while the dispatcher records what the gateways hold: every call ends OK or with an
expected domain refusal, never INTERNAL, and no transaction deadlocks (the lock
cycle the load found on PostgreSQL, between a resize holding the tenant and the
dispatcher updating a queue row twice, is gone)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import grpc
import psycopg
from prometheus_client import REGISTRY

from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import resources_pb2 as res
from tests.governance.conftest import Governed
from tests.governance.support import count, eventually, refused, settled
from tests.support.databases import _libpq, runtime_url

TENANTS = 3
QUEUES_PER_TENANT = 3
WORKERS = 24
CALLS_PER_WORKER = 25
WAITING_ON_A_LOCK = (
    "SELECT pid FROM pg_stat_activity "
    "WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
)


async def _provision(gov: Governed, tenants: int = TENANTS) -> None:
    for t in range(tenants):
        await gov.operator.ProvisionTenant(
            pb.ProvisionTenantRequest(
                request_id=f"prov-t{t}",
                tenant_id=f"tenant-{t}",
                spec=res.TenantSpec(default_region="eu-west-1"),
                queues=[
                    pb.QueueTemplate(queue_id=f"queue-{q}", spec=res.QueueSpec(capacity=5))
                    for q in range(QUEUES_PER_TENANT)
                ],
            )
        )


async def _worker(gov: Governed, number: int, statuses: Counter[str]) -> int:
    """Make this worker's calls, counting their statuses; returns how many queues it made."""
    made = 0
    rng = random.Random(number)  # a reproducible mix
    for call in range(CALLS_PER_WORKER):
        tenant = f"tenant-{rng.randrange(TENANTS)}"
        roll = rng.random()
        try:
            if roll < 0.05:
                # A tenant's phase change takes the tenant, then all its queues by id.
                if rng.random() < 0.5:
                    await gov.operator.SuspendTenant(
                        pb.SuspendTenantRequest(tenant_id=tenant, reason="load")
                    )
                else:
                    await gov.operator.ResumeTenant(pb.ResumeTenantRequest(tenant_id=tenant))
            elif roll < 0.35:
                await gov.operator.CreateQueue(
                    pb.CreateQueueRequest(
                        tenant_id=tenant,
                        queue_id=f"new-{number}-{call}",
                        spec=res.QueueSpec(
                            capacity=3, region=rng.choice(["eu-west-1", "us-east-1"])
                        ),
                        request_id=f"cq-{number}-{call}",
                    )
                )
                made += 1
            else:
                queue_id = f"queue-{rng.randrange(QUEUES_PER_TENANT)}"
                current = (
                    await gov.operator.GetQueue(
                        pb.GetQueueRequest(tenant_id=tenant, queue_id=queue_id)
                    )
                ).queue
                await gov.operator.ResizeQueue(
                    pb.ResizeQueueRequest(
                        tenant_id=tenant,
                        queue_id=queue_id,
                        capacity=rng.randrange(1, 50),
                        reason="load",
                        expected_resource_version=current.meta.resource_version,
                    )
                )
        except grpc.aio.AioRpcError as exc:
            statuses[exc.code().name] += 1
        else:
            statuses["OK"] += 1
    return made


def _conflicts() -> float:
    total = 0.0
    for outcome in ("retried", "aborted"):
        value = REGISTRY.get_sample_value(
            "ppos_database_failures_total", {"kind": "conflict", "outcome": outcome}
        )
        total += value or 0.0
    return total


async def test_concurrent_creates_and_resizes_never_fail_internally(gov: Governed) -> None:
    await _provision(gov)
    conflicts = _conflicts()
    statuses: Counter[str] = Counter()
    made = await asyncio.gather(*(_worker(gov, n, statuses) for n in range(WORKERS)))
    assert sum(statuses.values()) == WORKERS * CALLS_PER_WORKER
    # A resize that read a version another resize replaced is refused as stale.
    assert set(statuses) <= {"OK", "FAILED_PRECONDITION"}, statuses
    assert statuses["OK"] > 0
    # One lock order everywhere: no transaction even had to be run again.
    assert _conflicts() == conflicts
    # The dispatcher recorded every acknowledged command: what each gateway holds
    # is the queue's current generation.
    await settled(gov.runtime)
    assert count(gov.runtime, "queues") == TENANTS * QUEUES_PER_TENANT + sum(made)
    assert count(gov.runtime, "queues", "applied_generation <> generation") == 0


async def _waiting_on_locks(conn: psycopg.AsyncConnection[tuple[int]]) -> int:
    rows = await (await conn.execute(WAITING_ON_A_LOCK)).fetchall()
    return len(rows)


async def test_a_route_update_queued_behind_a_retirement_does_not_deadlock(
    gov: Governed, backend: str
) -> None:
    """RetireTenant locks the tenant, its queues, then its routes; UpdatePartnerRoute
    locks the route's tenant before the route. On PostgreSQL the two are lined up on
    the tenant's row, retirement first: had the update taken the route before the
    tenant, the retirement would wait for the route and the update for the tenant."""
    await gov.operator.CreatePartner(
        pb.CreatePartnerRequest(partner_id="printer-a", display_name="A", region="eu-west-1")
    )
    await _provision(gov, 1)
    route = (
        await gov.operator.CreatePartnerRoute(
            pb.CreatePartnerRouteRequest(
                route_id="tenant-0-route",
                spec=res.PartnerRouteSpec(tenant_id="tenant-0", partner_id="printer-a"),
            )
        )
    ).route
    await settled(gov.runtime)
    conflicts = _conflicts()

    def retire() -> Any:  # a grpc.aio call is under way once made
        return gov.operator.RetireTenant(
            pb.RetireTenantRequest(tenant_id="tenant-0", reason="closing")
        )

    def update() -> Any:
        return gov.operator.UpdatePartnerRoute(
            pb.UpdatePartnerRouteRequest(
                route_id="tenant-0-route",
                spec=res.PartnerRouteSpec(tenant_id="tenant-0", partner_id="printer-a", priority=2),
                expected_resource_version=route.meta.resource_version,
            )
        )

    if backend == "postgresql":
        # As the plane's login: pg_stat_activity shows a role's waits to that role only.
        holder = await psycopg.AsyncConnection.connect(_libpq(runtime_url(gov.plane.database_url)))
        try:
            await holder.execute("SELECT 1 FROM tenants WHERE tenant_id = 'tenant-0' FOR UPDATE")
            retired = asyncio.ensure_future(retire())  # waits for the tenant
            await eventually(lambda: _waiting_on_locks(holder), lambda n: n == 1, within=20)
            updated = asyncio.ensure_future(update())  # lined up behind the retirement
            await eventually(lambda: _waiting_on_locks(holder), lambda n: n == 2, within=20)
        finally:
            await holder.rollback()
            await holder.close()
    else:  # one writer: the same two calls, in the same order
        retired = asyncio.ensure_future(retire())
        await retired
        updated = asyncio.ensure_future(update())
    assert (await retired).tenant.status.phase == res.TENANT_PHASE_RETIRED
    error = await refused(updated)
    # The update saw the retirement's result: its route is gone.
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert _conflicts() == conflicts  # no deadlock was broken, nothing ran twice
    assert count(gov.runtime, "partner_routes") == 0
