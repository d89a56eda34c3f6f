"""The overview's growth charts, failing deliveries and alerts; the alerts page."""

from __future__ import annotations

import asyncio
import json
import re

from prometheus_client import REGISTRY

from ppos.controlplane.governance.v1 import governance_service_pb2 as gov
from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.portal.alerts import runtime_failures
from ppos.preflight.v1 import job_pb2
from tests.ops.worlds import REGION
from tests.portal.support import OTHER_REGION, Operator, PortalWorld, text_of


async def _until_page(operator: Operator, path: str, pattern: str) -> str:
    last = ""
    try:
        async with asyncio.timeout(30):
            while True:
                page = await operator.get(path)
                if re.search(pattern, page.text, re.S):
                    return page.text
                last = page.text
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"{pattern} never on {path}: {text_of(last)[-3000:]}") from None


async def test_growth_charts_failing_deliveries_and_alerts(
    world: PortalWorld, operator: Operator
) -> None:
    page = await operator.get("/")
    charts = [
        json.loads(found.replace("&#39;", "'"))
        for found in re.findall(r"data-chart='([^']+)'", page.text)
    ]
    drawn = {(c["region"], c["kind"]): c for c in charts}
    growth = drawn[(REGION, "growth")]
    records, quarantined = (s["values"] for s in growth["series"])
    assert records[-1] > 0
    assert len(growth["t"]) == len(records) == len(quarantined)
    assert quarantined[-1] == 1  # the malformed record
    (lag,) = drawn[(REGION, "lag")]["series"]
    assert lag["label"] == "lag (s)"
    assert len(lag["values"]) == len(growth["t"])
    readiness = {s["label"]: s["values"][-1] for s in drawn[(REGION, "readiness")]["series"]}
    assert readiness == {"READY": 2, "NOT_READY": 0, "DRAINING": 0, "REIMAGING": 0, "LOST": 0}
    assert drawn[(OTHER_REGION, "readiness")]["series"][0]["values"][-1] == 1
    assert "No alert is firing." in page.text
    # The FAILED_RUNTIME_ENVIRONMENT rate is the plane's recent counts (too few to fire),
    # and the sync scheduler leads (sync interval 0: no sweep scheduled, still a leader).
    reply = await asyncio.to_thread(world.cp.sync.list_statuses_reply)
    assert reply.HasField("leader")
    assert not reply.leader.expired
    failed = await asyncio.to_thread(
        world.cp.sync.list_jobs,
        governance_states=[job_pb2.GOVERNANCE_STATE_FAILED_RUNTIME_ENVIRONMENT],
    )
    assert failed.jobs
    recent = runtime_failures(reply.statuses)
    assert recent[REGION][0] == len([j for j in failed.jobs if j.record.region == REGION])
    # The plane (in this process) counts them for PposRuntimeEnvironmentFailing too.
    counted = REGISTRY.get_sample_value(
        "ppos_sync_runtime_environment_failures_total", {"region": REGION}
    )
    assert counted is not None
    assert counted >= len(failed.jobs)

    # A node of REGION not ready (1 of 2): PposNodesNotReady, on the banner and the page.
    await asyncio.to_thread(world.nodes["b"].heartbeat, ready=False)
    alerts = await _until_page(operator, "/alerts", r'data-rule="PposNodesNotReady"')
    item = re.search(r'<li class="alert-warning" data-rule="PposNodesNotReady">(.*?)</li>', alerts)
    assert item is not None
    assert "1 of 2 nodes not READY" in text_of(item.group(1))
    assert "since 20" in text_of(item.group(1))
    banner = await operator.get("/nodes")
    assert 'class="banner"' in banner.text
    assert "PposNodesNotReady" in banner.text

    # The gateway refuses a command: it fails, detailed on the overview, and alerts.
    assert world.world.sim.gateway is not None
    world.world.sim.gateway.faults.refuse_next = 1
    await asyncio.to_thread(
        world.cp.governance.provision_tenant,
        "refused",
        res.TenantSpec(display_name="Refused", default_region=REGION),
        queues=[gov.QueueTemplate(queue_id="main", spec=res.QueueSpec(capacity=3))],
    )
    overview = await _until_page(operator, "/", r'id="failing-deliveries"')
    table = re.search(r'<table id="failing-deliveries">(.*?)</table>', overview, re.S)
    assert table is not None
    assert "simulated refusal" in text_of(table.group(1))
    assert 'data-rule="PposOutboxFailing"' in overview

    await asyncio.to_thread(world.nodes["b"].heartbeat, ready=True)
    healed = await _until_page(
        operator, "/alerts", r"PposNodesNotReady</th><td>[^<]*</td><td>quiet"
    )
    assert 'data-rule="PposNodesNotReady"' not in healed
