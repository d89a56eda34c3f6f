"""The outbox: delivery with PREFLIGHT_JWTs, retries, holds, refusals, leases between replicas."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

from prometheus_client import REGISTRY

from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.controlplane.runtime.composition import governance_deps
from ppos.controlplane.security.peers import caller_identity, gateway_audience
from ppos.controlplane.services.governance.outbox.dispatcher import Dispatcher
from ppos.controlplane.services.governance.outbox.receivers import Receivers
from tests.governance.conftest import Governed, StartGoverned
from tests.governance.support import bearer_claims, count, eventually, start_gateway

METHOD = "/ppos.preflight.v1.PreflightGatewayService/ApplyQueuePolicy"


async def _tenant(gov: Governed, tenant_id: str = "acme", queues: int = 1) -> None:
    await gov.operator.ProvisionTenant(
        pb.ProvisionTenantRequest(
            request_id=f"prov-{tenant_id}",
            tenant_id=tenant_id,
            spec=res.TenantSpec(default_region="eu-west-1"),
            queues=[
                pb.QueueTemplate(queue_id=f"queue-{i}", spec=res.QueueSpec(capacity=5))
                for i in range(queues)
            ],
        )
    )


async def _commands(gov: Governed, *states: int) -> list[res.OutboxCommand]:
    reply = await gov.operator.ListCommands(pb.ListCommandsRequest(states=list(states)))
    return list(reply.commands)


def _delivered(outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "ppos_outbox_deliveries_total", {"target": "gateway:eu-west-1", "outcome": outcome}
    )
    return value or 0.0


async def test_a_command_carries_a_fresh_gateway_jwt_and_nothing_else(gov: Governed) -> None:
    acknowledged = _delivered("acknowledged")
    await _tenant(gov)
    sim = gov.gateway()
    await eventually(lambda: len(sim.applied()), lambda n: n == 1)
    await eventually(lambda: _delivered("acknowledged"), lambda n: n == acknowledged + 1)
    call = sim.applied()[0]
    assert call.method == "ApplyQueuePolicy"
    keys = [k for k, _ in call.metadata]
    assert keys.count("authorization") == 1
    assert "x-operator" not in keys
    claims = bearer_claims(call.metadata)
    assert claims["_typ"] == "preflight+jwt"
    assert claims["aud"] == gateway_audience("eu-west-1")
    assert claims["sub"] == caller_identity("governance")
    assert claims["mth"] == METHOD
    assert claims["act"] == {"sub": "operator:break-glass"}
    assert 0 < claims["exp"] - claims["iat"] <= 300
    # The request id of the operator's call travels with the command.
    audit = await gov.operator.ListAuditEntries(pb.ListAuditEntriesRequest(resource_kind="tenant"))
    assert claims["rid"] == audit.entries[0].request_id
    assert call.request["header"]["request_id"] == audit.entries[0].request_id
    command = (await _commands(gov))[0]
    assert command.state == res.COMMAND_STATE_ACKNOWLEDGED
    assert command.target == "gateway:eu-west-1"
    assert command.method == METHOD
    assert command.attempts == 1
    assert command.receiver_command_id == call.command_id
    assert not command.receiver_duplicate
    assert command.idempotency_key == call.idempotency_key
    assert (command.issued_by.kind, command.issued_by.name) == ("operator", "break-glass")
    assert json.loads(command.request_json)["queue_id"] == "queue-0"
    assert "authorization" not in command.request_json.lower()


async def test_transient_errors_are_retried_and_the_gateway_acts_once(gov: Governed) -> None:
    sim = gov.gateway()
    sim.faults.unavailable_next = 3
    await _tenant(gov)
    command = (
        await eventually(
            lambda: _commands(gov, res.COMMAND_STATE_ACKNOWLEDGED), lambda c: len(c) == 1
        )
    )[0]
    assert command.attempts == 4
    assert [c.outcome for c in sim.calls] == ["unavailable"] * 3 + ["applied"]
    assert len({c.idempotency_key for c in sim.calls}) == 1, "one key on every attempt"


async def test_a_lost_acknowledgement_is_resent_and_answered_as_duplicate(gov: Governed) -> None:
    sim = gov.gateway()
    sim.faults.drop_next = 1
    await _tenant(gov)
    command = (
        await eventually(
            lambda: _commands(gov, res.COMMAND_STATE_ACKNOWLEDGED), lambda c: len(c) == 1
        )
    )[0]
    assert [(c.outcome, c.dropped) for c in sim.calls] == [("applied", True), ("duplicate", False)]
    assert command.receiver_duplicate
    assert command.receiver_command_id == sim.calls[0].command_id
    assert len(sim.applied()) == 1
    assert sim.state.queues[("acme", "queue-0")]["capacity"] == 5


async def test_an_unreachable_gateway_holds_commands_without_failing_them(
    start_governed: StartGoverned,
) -> None:
    gov = await start_governed()
    gateway = gov.gateways["eu-west-1"]
    port = gateway.port
    await gateway.stop()
    await _tenant(gov)
    held = await eventually(
        lambda: _commands(gov), lambda c: len(c) == 1 and c[0].attempts >= 3, within=20
    )
    assert held[0].state in (res.COMMAND_STATE_PENDING, res.COMMAND_STATE_SENT)
    assert held[0].last_error.startswith("UNAVAILABLE")
    assert count(gov.runtime, "outbox_commands", "state = 'FAILED'") == 0
    tenant = await gov.operator.GetTenant(pb.GetTenantRequest(tenant_id="acme"))
    assert tenant.tenant.status.phase == res.TENANT_PHASE_ACTIVE
    # The gateway comes back on its address: the held command goes through.
    back = await start_gateway("eu-west-1", gov.verifier, port=port)
    gov.gateways["eu-west-1"] = back
    await eventually(
        lambda: _commands(gov, res.COMMAND_STATE_ACKNOWLEDGED), lambda c: len(c) == 1, within=20
    )
    assert len(back.sim.applied()) == 1


async def test_a_refused_command_fails_visibly_and_can_be_retried(gov: Governed) -> None:
    sim = gov.gateway()
    sim.faults.refuse_next = 1
    await _tenant(gov)
    failed = (
        await eventually(lambda: _commands(gov, res.COMMAND_STATE_FAILED), lambda c: len(c) == 1)
    )[0]
    assert failed.attempts == 1
    assert failed.last_error.startswith("INVALID_ARGUMENT: simulated refusal")
    retried = await gov.operator.RetryCommand(
        pb.RetryCommandRequest(command_id=failed.command_id, reason="gateway fixed")
    )
    assert retried.command.state == res.COMMAND_STATE_PENDING
    await eventually(lambda: _commands(gov, res.COMMAND_STATE_ACKNOWLEDGED), lambda c: len(c) == 1)
    assert [c.outcome for c in sim.calls] == ["refused", "applied"]
    audit = await gov.operator.ListAuditEntries(
        pb.ListAuditEntriesRequest(resource_kind="command", resource_id=failed.command_id)
    )
    assert [e.method.rsplit("/", 1)[-1] for e in audit.entries] == [
        "outbox:failed",
        "RetryCommand",
        "outbox:acknowledged",
    ]


async def test_attempts_run_out_when_configured(start_governed: StartGoverned) -> None:
    gov = await start_governed({"PPOS_OUTBOX_MAX_ATTEMPTS": "2"})
    gov.gateway().faults.unavailable_next = 10
    await _tenant(gov)
    failed = (
        await eventually(lambda: _commands(gov, res.COMMAND_STATE_FAILED), lambda c: len(c) == 1)
    )[0]
    assert failed.attempts == 2
    assert failed.last_error.startswith("gave up after 2 attempts")


async def test_two_dispatchers_share_the_outbox_and_never_send_twice(
    start_governed: StartGoverned,
) -> None:
    # This replica writes commands but delivers none; two dispatchers (two
    # replicas' worth, distinct lease owners) share the delivery.
    gov = await start_governed(
        {"PPOS_GOVERNANCE_BACKGROUND": "admin-jobs", "PPOS_OUTBOX_BATCH_SIZE": "4"}
    )
    for index in range(4):
        await _tenant(gov, f"tenant-{index}", queues=6)
    total = count(gov.runtime, "outbox_commands")
    assert total == 24
    sim = gov.gateway()
    sim.faults.slow_seconds = 0.02
    receivers = Receivers(governance_deps(gov.runtime))
    first = Dispatcher(governance_deps(gov.runtime), receivers, owner="replica-a")
    second = Dispatcher(governance_deps(gov.runtime), receivers, owner="replica-b")
    stop = asyncio.Event()
    runs = [asyncio.create_task(d.run(stop)) for d in (first, second)]
    try:
        await eventually(
            lambda: count(gov.runtime, "outbox_commands", "state = 'ACKNOWLEDGED'"),
            lambda n: n == total,
            within=30,
        )
    finally:
        stop.set()
        await asyncio.gather(*runs)
        await receivers.close()
    received = Counter(c.idempotency_key for c in sim.calls)
    assert len(received) == total
    assert set(received.values()) == {1}, "no command was sent twice"
    assert {c.outcome for c in sim.calls} == {"applied"}
    assert first.acknowledged > 0
    assert second.acknowledged > 0
    assert first.acknowledged + second.acknowledged == total
    audit = count(gov.runtime, "audit_log", "method = 'outbox:acknowledged'")
    assert audit == total
