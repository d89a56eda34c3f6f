"""The overview's growth charts, failing deliveries and alerts; the alerts page."""

from __future__ import annotations

import asyncio
import json
import re

from ppos.controlplane.governance.v1 import governance_service_pb2 as gov
from ppos.controlplane.governance.v1 import resources_pb2 as res
from tests.ops.worlds import REGION
from tests.portal.support import Operator, PortalWorld, text_of


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
    chart = re.search(r"data-chart='([^']+)'", page.text)
    assert chart is not None, page.text
    series = json.loads(chart.group(1).replace("&#39;", "'"))
    assert series["region"] == REGION
    assert series["records"][-1] > 0
    assert len(series["t"]) == len(series["records"]) == len(series["quarantined"])
    assert series["quarantined"][-1] == 1  # the malformed record
    assert "No alert is firing." in page.text

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
