"""What two replicas on one database must not contradict: leadership, idempotent
creates racing, append-only decisions."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.controlplane.services.governance.leadership import Leadership
from ppos.controlplane.storage.database import Database
from tests.governance.conftest import Governed
from tests.governance.support import count


async def test_one_leader_at_a_time_and_a_successor_when_it_goes(database_url: str) -> None:
    first_db = Database(database_url, pool_size=2)
    second_db = Database(database_url, pool_size=2)
    first = Leadership(first_db, "reconciler-test", "replica-a", lease_seconds=0.5)
    second = Leadership(second_db, "reconciler-test", "replica-b", lease_seconds=0.5)
    try:
        assert await first.acquire()
        assert not await second.acquire()
        assert await first.acquire(), "the leader keeps leading"
        assert not await second.acquire()
        await first.release()
        assert await second.acquire(), "released: the other replica takes over"
        assert not await first.acquire()
    finally:
        await first.release()
        await second.release()
        first_db.close()
        second_db.close()


async def test_a_dead_leaders_lease_or_lock_passes_on(database_url: str) -> None:
    first_db = Database(database_url, pool_size=2)
    second_db = Database(database_url, pool_size=2)
    first = Leadership(first_db, "reconciler-test", "replica-a", lease_seconds=0.3)
    second = Leadership(second_db, "reconciler-test", "replica-b", lease_seconds=0.3)
    try:
        assert await first.acquire()
        # The leader dies without a goodbye: its connection closes (PostgreSQL
        # frees the advisory lock) or its lease is no longer renewed (SQLite).
        if first_db.is_postgres:
            await first_db.run_in_executor(first._drop_connection)
        else:
            await asyncio.sleep(0.4)
        assert await second.acquire()
    finally:
        await second.release()
        first_db.close()
        second_db.close()


async def test_concurrent_provisioning_under_one_request_id_creates_once(gov: Governed) -> None:
    request = pb.ProvisionTenantRequest(
        request_id="same-request",
        tenant_id="acme",
        spec=res.TenantSpec(default_region="eu-west-1"),
        queues=[pb.QueueTemplate(queue_id="main", spec=res.QueueSpec(capacity=3))],
    )
    replies = await asyncio.gather(*(gov.operator.ProvisionTenant(request) for _ in range(6)))
    assert sorted(r.replayed for r in replies) == [False] + [True] * 5
    assert len({r.tenant.meta.create_time.ToNanoseconds() for r in replies}) == 1
    assert count(gov.runtime, "tenants") == 1
    assert count(gov.runtime, "outbox_commands") == 1
    assert count(gov.runtime, "audit_log", "resource_kind = 'tenant'") == 1


async def test_decisions_are_append_only(gov: Governed) -> None:
    def insert(session: sa.orm.Session) -> None:
        session.execute(
            sa.text(
                "INSERT INTO governance_decisions (decision_id, region, job_id, revision, "
                "policy_id, policy_generation, tenant_id, queue_id, node_id, governance_state, "
                "payload_sha256, sync_sequence, record_time, node_action, actions, rationale, "
                "created_at) VALUES ('dec_1', 'eu-west-1', 'job_1', 1, 'p', 1, 't', 'q', '', "
                "'DEGRADED', :sha, 1, :now, '', '[]', 'why', :now)"
            ),
            {"sha": b"\x00" * 32, "now": _now(gov)},
        )

    gov.runtime.db.write_sync(insert)
    for statement in (
        "UPDATE governance_decisions SET rationale = 'rewritten'",
        "DELETE FROM governance_decisions",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            gov.runtime.db.write_sync(lambda s, sql=statement: s.execute(sa.text(sql)))
    assert count(gov.runtime, "governance_decisions", "rationale = 'why'") == 1


def _now(gov: Governed) -> object:
    value = utcnow()
    return value.replace(tzinfo=None) if gov.runtime.db.is_sqlite else value


async def test_concurrent_admin_job_starts_under_one_request_id_start_one_job(
    gov: Governed,
) -> None:
    request = pb.StartAdminJobRequest(
        kind=res.ADMIN_JOB_KIND_REGION_DRAIN,
        parameters={"region": "eu-west-1", "reason": "datacentre maintenance"},
        request_id="same-job-request",
    )
    replies = await asyncio.gather(*(gov.operator.StartAdminJob(request) for _ in range(6)))
    assert len({r.job.admin_job_id for r in replies}) == 1
    assert count(gov.runtime, "admin_jobs") == 1
