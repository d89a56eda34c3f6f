"""Queue capacity as slots: priority (higher first), then arrival (FIFO).

First the simulated gateway's slots alone (preflightsim/slots.py), then end to
end: an operator's resize travels through the outbox to the simulated gateway,
whose queue admits its waiting jobs in that order.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.preflight.v1 import job_pb2
from ppos.preflightsim.slots import ACTIVE, DRAINING, PAUSED, QueueClosed, QueueSlots
from tests.governance.conftest import Governed, StartGoverned, public_verifier
from tests.governance.support import eventually, settled
from tests.governance.sync_double import job_record, start_sync_double


def test_slots_admit_by_priority_then_arrival() -> None:
    queue = QueueSlots(capacity=2)
    assert queue.submit("a", priority=0)
    assert queue.submit("b", priority=0)
    assert not queue.submit("c", priority=0), "beyond capacity: waits"
    assert not queue.submit("d", priority=5)
    assert not queue.submit("e", priority=0)
    assert not queue.submit("f", priority=5)
    assert queue.waiting == ["d", "f", "c", "e"]
    assert queue.finish("a") == ["d"]
    assert queue.finish("b") == ["f"]
    assert queue.finish("d") == ["c"]
    assert queue.started == ["a", "b", "d", "f", "c"]
    assert queue.waiting == ["e"]


def test_a_capacity_change_re_admits_and_a_lower_one_stops_nothing() -> None:
    queue = QueueSlots(capacity=3)
    for job in ("a", "b", "c", "d", "e"):
        queue.submit(job)
    assert sorted(queue.running) == ["a", "b", "c"]
    assert queue.apply(1, ACTIVE) == [], "lowered: running jobs go on, none admitted"
    assert sorted(queue.running) == ["a", "b", "c"]
    assert queue.finish("a") == [], "still over capacity"
    assert queue.finish("b") == [], "at capacity"
    assert queue.finish("c") == ["d"], "below the new capacity: the next waiting job starts"
    assert queue.apply(4, ACTIVE) == ["e"], "raised: waiting jobs start at once"


def test_paused_admits_nothing_and_draining_takes_no_new_job() -> None:
    queue = QueueSlots(capacity=1)
    queue.submit("a")
    queue.apply(1, PAUSED)
    queue.finish("a")
    assert not queue.submit("b"), "paused: accepted, not started"
    assert queue.running == {}
    assert queue.apply(1, ACTIVE) == ["b"]
    queue.apply(1, DRAINING)
    with pytest.raises(QueueClosed):
        queue.submit("c")
    assert queue.submit("b"), "the same job again is the one already running"


async def test_a_resize_through_the_plane_re_admits_waiting_jobs_at_the_gateway(
    gov: Governed,
) -> None:
    await gov.operator.ProvisionTenant(
        pb.ProvisionTenantRequest(
            request_id="prov-acme",
            tenant_id="acme",
            spec=res.TenantSpec(default_region="eu-west-1"),
            queues=[pb.QueueTemplate(queue_id="main", spec=res.QueueSpec(capacity=1))],
        )
    )
    await settled(gov.runtime)
    sim = gov.gateway()
    assert sim.submit_job("acme", "main", "job_low_1", priority=0)
    assert not sim.submit_job("acme", "main", "job_low_2", priority=0)
    assert not sim.submit_job("acme", "main", "job_high", priority=9)
    assert not sim.submit_job("acme", "main", "job_low_3", priority=0)
    current = await gov.operator.GetQueue(pb.GetQueueRequest(tenant_id="acme", queue_id="main"))
    await gov.operator.ResizeQueue(
        pb.ResizeQueueRequest(
            tenant_id="acme",
            queue_id="main",
            capacity=3,
            reason="more printers",
            expected_resource_version=current.queue.meta.resource_version,
        )
    )
    slots = sim.slots[("acme", "main")]
    await eventually(lambda: slots.capacity, lambda c: c == 3)
    assert slots.started == ["job_low_1", "job_high", "job_low_2"]
    assert slots.waiting == ["job_low_3"]
    # Paused by the operator: a freed slot admits nothing until resumed.
    await gov.operator.PauseQueue(
        pb.PauseQueueRequest(tenant_id="acme", queue_id="main", reason="maintenance")
    )
    await eventually(lambda: slots.state, lambda s: s == PAUSED)
    assert sim.finish_job("acme", "main", "job_low_1") == []
    await gov.operator.ResumeQueue(pb.ResumeQueueRequest(tenant_id="acme", queue_id="main"))
    await eventually(lambda: slots.waiting, lambda w: w == [])
    assert slots.started[-1] == "job_low_3"


async def test_a_policy_retry_waits_for_a_slot_in_the_jobs_own_queue(
    start_governed: StartGoverned, tmp_path: Path
) -> None:
    sync = await start_sync_double(public_verifier(tmp_path / "data" / "keys"))
    try:
        gov = await start_governed(
            {"PPOS_SERVICES": "governance,noderegistry", "PPOS_PEER_REGISTRYSYNC": sync.address}
        )
        await gov.operator.ProvisionTenant(
            pb.ProvisionTenantRequest(
                request_id="prov-acme",
                tenant_id="acme",
                spec=res.TenantSpec(default_region="eu-west-1"),
                queues=[pb.QueueTemplate(queue_id="main", spec=res.QueueSpec(capacity=1))],
            )
        )
        await settled(gov.runtime)
        sim = gov.gateway()
        assert sim.submit_job("acme", "main", "job_running")
        await gov.operator.SetGovernancePolicy(
            pb.SetGovernancePolicyRequest(
                policy_id="retry",
                spec=res.GovernancePolicySpec(
                    trigger_state=job_pb2.GOVERNANCE_STATE_FAILED_RUNTIME_ENVIRONMENT,
                    actions=[res.PolicyAction(kind=res.POLICY_ACTION_KIND_RETRY_JOB)],
                    enabled=True,
                ),
            )
        )
        sync.double.add(
            job_record("job_failed", job_pb2.GOVERNANCE_STATE_FAILED_RUNTIME_ENVIRONMENT)
        )
        await eventually(lambda: len(sim.applied("RetryJob")), lambda n: n == 1)
        retry = sim.applied("RetryJob")[0].request
        assert (retry["tenant_id"], retry["queue_id"]) == ("acme", "main")
        slots = sim.slots[("acme", "main")]
        assert slots.waiting == ["job_failed"], "the queue is full: the new attempt waits"
        assert sim.finish_job("acme", "main", "job_running") == ["job_failed"]
        decisions = await gov.operator.ListDecisions(pb.ListDecisionsRequest(policy_id="retry"))
        [decision] = decisions.decisions
        assert "queued for a slot in acme/main" in decision.actions[0].description
    finally:
        await sync.server.stop(0)
