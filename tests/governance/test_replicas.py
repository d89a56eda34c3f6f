"""What two replicas on one database must not contradict: idempotent creates racing,
append-only decisions (leadership: tests/storage/test_leadership.py)."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import resources_pb2 as res
from tests.governance.conftest import Governed
from tests.governance.support import count


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
