"""Named operators in the portal: each sees every page, with only the actions their
role may take; the plane refuses the others when posted anyway."""

from __future__ import annotations

import asyncio
import re

from ppos.controlplane.governance.v1 import governance_service_pb2 as gov
from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.preflight.v1 import job_pb2
from tests.ops.worlds import REGION
from tests.portal.support import Operator, PortalWorld, operator_for, text_of
from tests.support.operators import add_operator

POST_FORM = re.compile(r'<form method="post" action="([^"]+)"')


def _actions(page: str) -> set[str]:
    """Where the page's change forms post (sign-out is everyone's)."""
    return {re.sub(r"node_\w+|[0-9a-f-]{36}", "X", a) for a in POST_FORM.findall(page)} - {
        "/signout"
    }


async def test_each_role_sees_its_actions_and_the_plane_refuses_the_rest(
    world: PortalWorld,
) -> None:
    plane = world.world.plane
    policy = res.GovernancePolicySpec(
        trigger_state=job_pb2.GOVERNANCE_STATE_FAILED_RUNTIME_ENVIRONMENT,
        actions=[res.PolicyAction(kind=res.POLICY_ACTION_KIND_RETRY_JOB)],
    )
    await asyncio.to_thread(world.cp.governance.set_policy, "fre", policy)
    await asyncio.to_thread(
        world.cp.governance.provision_tenant,
        "acme",
        res.TenantSpec(display_name="Acme", default_region=REGION),
        queues=[gov.QueueTemplate(queue_id="main", spec=res.QueueSpec(capacity=3))],
    )
    node_id = world.nodes["b"].node_id
    sweeps = await asyncio.to_thread(world.cp.sync.list_sweeps)
    pages = ("/", f"/nodes/{node_id}", "/sync", "/governance", "/governance/policies/fre")
    seen: dict[str, set[str]] = {}
    for role in ("viewer", "operator", "admin"):
        named = await add_operator(plane, f"{role}-1", role)
        async with operator_for(world) as http:
            person = Operator(http)
            assert (await person.sign_in(named.credential, f"{role}-1")).status_code == 303
            actions: set[str] = set()
            for path in pages:
                page = await person.get(path)
                assert page.status_code == 200, (role, path, text_of(page.text)[-500:])
                assert f"({role})" in page.text
                actions |= _actions(page.text)
            seen[role] = actions
            if role == "viewer":
                # What the page did not offer, posted anyway: the plane refuses it.
                refused = await person.post(
                    f"/nodes/{node_id}/cordon", {"reason": "not mine", "confirm_name": node_id}
                )
                assert refused.status_code == 403
                assert "ROLE_REQUIRED" in refused.text
                sweep = await person.post("/sync/sweeps", {"regions": ""})
                assert sweep.status_code == 403
    node = await asyncio.to_thread(world.cp.nodes.get_node, node_id)
    assert node.spec.schedulable
    assert await asyncio.to_thread(world.cp.sync.list_sweeps) == sweeps

    assert seen["viewer"] == set()
    node_actions = {f"/nodes/X/{a}" for a in ("cordon", "uncordon", "drain", "reimage")}
    queue_actions = {f"/governance/queues/{a}" for a in ("pause", "drain", "resume")}
    assert seen["operator"] == node_actions | queue_actions | {"/sync/sweeps"}
    admin_only = {"/governance/queues/resize", "/governance/policies/fre/preview"}
    assert seen["admin"] == seen["operator"] | admin_only
