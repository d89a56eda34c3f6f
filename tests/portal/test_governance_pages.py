"""Governance pages: partners and fallback chains, a policy's dry-run preview and
save, the reconciler's decisions citing their jobs, a command's lifecycle and retry."""

from __future__ import annotations

import asyncio
import re

from ppos.controlplane.governance.v1 import governance_service_pb2 as gov
from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.preflight.v1 import job_pb2
from tests.ops.worlds import REGION
from tests.portal.support import Operator, PortalWorld, text_of

FRE = job_pb2.GOVERNANCE_STATE_FAILED_RUNTIME_ENVIRONMENT
FRE_JOBS = {"fix_1779116603391", "job_1779116604100_bad01"}  # in the odd samples


async def _tenant(world: PortalWorld, tenant_id: str) -> None:
    await asyncio.to_thread(
        world.cp.governance.provision_tenant,
        tenant_id,
        res.TenantSpec(display_name=tenant_id, default_region=REGION),
        queues=[gov.QueueTemplate(queue_id="main", spec=res.QueueSpec(capacity=4))],
    )


async def test_partners_routes_and_their_fallback_chains(
    world: PortalWorld, operator: Operator
) -> None:
    g = world.cp.governance
    await _tenant(world, "acme")
    hostile = "<b>Print</b>haus"
    await asyncio.to_thread(g.create_partner, "printhaus", display_name=hostile, region=REGION)
    await asyncio.to_thread(g.create_partner, "backup", display_name="Backup", region=REGION)
    for route_id, partner, fallback in (
        ("route-1", "printhaus", "backup"),
        ("route-2", "backup", ""),
    ):
        spec = res.PartnerRouteSpec(
            tenant_id="acme", queue_id="main", partner_id=partner, fallback_partner_id=fallback
        )
        await asyncio.to_thread(g.create_route, route_id, spec)
    page = await operator.get("/governance/partners")
    assert page.status_code == 200
    assert "<b>Print" not in page.text
    section = re.search(r'data-route="route-1"(.*?)</section>', page.text, re.S)
    assert section is not None
    steps = [text_of(x).strip() for x in re.findall(r"<li>(.*?)</li>", section.group(1), re.S)]
    assert steps[0] == f"{hostile} printhaus ({REGION})"
    assert steps[1] == f"then, if it fails, Backup backup ({REGION})"
    assert len(steps) == 2


async def test_a_policy_edit_is_previewed_then_saved_and_its_decisions_cite_jobs(
    world: PortalWorld, operator: Operator
) -> None:
    spec = res.GovernancePolicySpec(
        trigger_state=FRE,
        actions=[res.PolicyAction(kind=res.POLICY_ACTION_KIND_RETRY_JOB)],
        enabled=False,
    )
    await asyncio.to_thread(world.cp.governance.set_policy, "fre", spec)
    page = await operator.get("/governance/policies/fre")
    assert page.status_code == 200
    version = re.search(r'name="resource_version" value="([^"]+)"', page.text)
    assert version is not None
    form = {
        "resource_version": version.group(1),
        "enabled": "yes",
        "trigger_state": "FAILED_RUNTIME_ENVIRONMENT",
        "node_failure_threshold": "0",
        "node_failure_window_seconds": "0",
    }
    preview = await operator.post("/governance/policies/fre/preview", form)
    assert preview.status_code == 200, preview.text
    table = re.search(r'<table class="decisions">(.*?)</table>', preview.text, re.S)
    assert table is not None
    cited = set(re.findall(rf'href="/sync/jobs/{REGION}/([^"]+)"', table.group(1)))
    assert cited == FRE_JOBS
    assert "RETRY_JOB" in table.group(1)
    policy = await asyncio.to_thread(world.cp.governance.get_policy, "fre")
    assert not policy.spec.enabled  # a preview changes nothing

    assert (await operator.post("/governance/policies/fre/save", form)).status_code == 303
    policy = await asyncio.to_thread(world.cp.governance.get_policy, "fre")
    assert policy.spec.enabled
    stale = await operator.post("/governance/policies/fre/save", form)
    assert stale.status_code == 409  # the version seen is no longer the policy's

    async with asyncio.timeout(90):  # the reconciler decides on its own schedule
        while True:
            decisions = await operator.get("/decisions?policy=fre")
            found = set(re.findall(rf'href="/sync/jobs/{REGION}/([^"]+)"', decisions.text))
            if found == FRE_JOBS:
                break
            await asyncio.sleep(0.3)
    job = await operator.get(f"/sync/jobs/{REGION}/fix_1779116603391")
    assert job.status_code == 200


async def test_a_failed_command_shows_its_lifecycle_and_is_retried_with_a_reason(
    world: PortalWorld, operator: Operator
) -> None:
    assert world.world.sim.gateway is not None
    world.world.sim.gateway.faults.refuse_next = 1
    await _tenant(world, "refused")
    async with asyncio.timeout(30):
        while True:
            listed = await asyncio.to_thread(
                world.cp.governance.list_commands, states=[res.COMMAND_STATE_FAILED]
            )
            if listed.commands:
                break
            await asyncio.sleep(0.2)
    command_id = listed.commands[0].command_id
    page = await operator.get(f"/outbox/{command_id}")
    assert page.status_code == 200
    assert re.search(r'id="command-state">FAILED<', page.text)
    assert "simulated refusal" in text_of(page.text)
    assert "outbox:failed" in page.text  # the lifecycle, as the plane audited it

    no_reason = await operator.post(f"/outbox/{command_id}/retry", {"reason": ""})
    assert no_reason.status_code == 400
    assert "INVALID_ARGUMENT" in no_reason.text
    retried = await operator.post(f"/outbox/{command_id}/retry", {"reason": "gateway fixed"})
    assert retried.status_code == 303, retried.text
    async with asyncio.timeout(30):
        while True:
            command = await asyncio.to_thread(world.cp.governance.get_command, command_id)
            if command.state == res.COMMAND_STATE_ACKNOWLEDGED:
                break
            await asyncio.sleep(0.2)
    after = await operator.get(f"/outbox/{command_id}")
    assert "gateway fixed" in after.text
    # Signed in with the control token: the audit names the break-glass admin
    # (an operator's name comes from the credential, never from a form).
    assert "operator:break-glass" in after.text
