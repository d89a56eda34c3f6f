"""PposNoSyncLeader on the alerts page, from the lease the plane reports: quiet while
the scheduler leads (sync interval 0), firing with since-when once the only leader
stops and none takes over."""

from __future__ import annotations

import asyncio
import re

from ppos.controlplane.services.registry_sync.service import RegistrySyncModule
from tests.portal.support import Operator, PortalWorld, text_of


async def test_the_alerts_page_says_when_the_sync_lost_its_leader(
    world: PortalWorld, operator: Operator
) -> None:
    quiet = await operator.get("/alerts")
    assert re.search(r"PposNoSyncLeader</th><td>[^<]*</td><td>quiet", quiet.text), text_of(
        quiet.text
    )[-2000:]
    lease = (await asyncio.to_thread(world.cp.sync.list_statuses_reply)).leader
    assert not lease.expired
    (module,) = [m for m in world.world.plane.server.modules if isinstance(m, RegistrySyncModule)]
    await module.scheduler.stop()  # the only replica: none takes over
    page = ""
    async with asyncio.timeout(30):  # only stops a hung test
        while 'data-rule="PposNoSyncLeader"' not in page:
            await asyncio.sleep(0.2)
            page = (await operator.get("/alerts")).text
    item = re.search(r'<li class="alert-critical" data-rule="PposNoSyncLeader">(.*?)</li>', page)
    assert item is not None, text_of(page)[-2000:]
    shown = text_of(item.group(1))
    assert f"the lease of {lease.holder_identity} (generation {lease.generation}) ran out" in shown
    assert "since 20" in shown
    banner = await operator.get("/nodes")
    assert "PposNoSyncLeader" in banner.text
