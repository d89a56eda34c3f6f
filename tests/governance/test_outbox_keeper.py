"""The lease keeper: a renewal that finds a lease ended by its own recorded
outcome does not call it lost; one that finds it gone otherwise does."""

from __future__ import annotations

from prometheus_client import REGISTRY

from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.controlplane.services.governance.outbox import lease as leases
from ppos.controlplane.services.governance.outbox.keeper import LeaseKeeper
from ppos.controlplane.services.governance.outbox.outcomes import Outcome, write_outcomes
from ppos.controlplane.storage.leases import DatabaseClock
from tests.governance.conftest import StartGoverned

NO_DISPATCHER = {"PPOS_GOVERNANCE_BACKGROUND": "admin-jobs"}


def _fenced_renewals() -> float:
    value = REGISTRY.get_sample_value("ppos_outbox_fenced_writes_total", {"write": "renew"})
    return value or 0.0


async def test_a_renewal_after_the_outcome_is_recorded_calls_only_unsettled_leases_lost(
    start_governed: StartGoverned,
) -> None:
    gov = await start_governed(NO_DISPATCHER)
    await gov.operator.ProvisionTenant(
        pb.ProvisionTenantRequest(
            request_id="prov-acme",
            tenant_id="acme",
            spec=res.TenantSpec(default_region="eu-west-1"),
            queues=[
                pb.QueueTemplate(queue_id=f"queue-{i}", spec=res.QueueSpec(capacity=1))
                for i in range(2)
            ],
        )
    )
    db = gov.runtime.db
    clock = DatabaseClock(postgres=db.is_postgres)
    claimed = await db.write(
        lambda s: leases.claim(s, "replica-a", limit=2, ttl=30, clock=clock, lock=db.is_postgres)
    )
    settled, unsettled = claimed.leases
    keeper = LeaseKeeper(db, "replica-a", 30, clock)
    keeper.hold(settled)
    keeper.hold(unsettled)
    keeper.settling(settled)
    # Both outcomes are written, as a group commit does, before the renewal runs;
    # only `settled` was marked as being recorded by this keeper's dispatcher.
    recorded = await db.write(
        lambda s: write_outcomes(
            s,
            "replica-a",
            [Outcome(settled, "ACKNOWLEDGED"), Outcome(unsettled, "ACKNOWLEDGED")],
            clock,
        )
    )
    assert recorded == [True, True]
    before = _fenced_renewals()
    await keeper.renew()
    assert [lease.command_id for lease in keeper.held] == [settled.command_id]
    assert _fenced_renewals() == before + 1  # the unsettled one only
    keeper.forget(settled)
    assert keeper.held == []
