"""The audit log as operators read it: list, filter, page, follow; who did what."""

from __future__ import annotations

import asyncio
import json

import grpc

from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from tests.governance.conftest import Governed
from tests.governance.support import eventually
from tests.support.operators import add_operator


async def _partner(
    gov: Governed, partner_id: str, metadata: tuple[tuple[str, str], ...] = ()
) -> None:
    await gov.operator.CreatePartner(
        pb.CreatePartnerRequest(partner_id=partner_id, region="eu-west-1"),
        metadata=metadata or gov.operator.metadata,
    )


async def test_entries_say_who_did_what_and_page_by_id(gov: Governed) -> None:
    alice = await add_operator(gov.plane, "alice", "admin")
    for index in range(5):
        await _partner(gov, f"shop-{index}", alice.metadata)
    seen, after = [], 0
    while True:
        page = await gov.operator.ListAuditEntries(
            pb.ListAuditEntriesRequest(after_audit_id=after, resource_kind="partner", page_size=2)
        )
        seen += list(page.entries)
        if not page.has_more:
            break
        after = page.entries[-1].audit_id
    assert [e.resource_id for e in seen] == [f"shop-{i}" for i in range(5)]
    ids = [e.audit_id for e in seen]
    assert ids == sorted(ids)
    entry = seen[0]
    assert (entry.actor.kind, entry.actor.name) == ("operator", "alice")
    assert entry.service == "governance"
    assert entry.method.endswith("/CreatePartner")
    assert entry.before_json == ""
    assert json.loads(entry.after_json)["partner_id"] == "shop-0"
    assert entry.request_id.startswith("req_")
    assert entry.create_time.seconds > 0
    one = await gov.operator.ListAuditEntries(
        pb.ListAuditEntriesRequest(resource_kind="partner", resource_id="shop-3")
    )
    assert [e.resource_id for e in one.entries] == ["shop-3"]


async def test_watch_follows_new_entries_and_ends_unavailable_on_shutdown(gov: Governed) -> None:
    await _partner(gov, "before-watch")
    stream = gov.operator.WatchAuditEntries(
        pb.WatchAuditEntriesRequest(resource_kind="partner"), timeout=60
    )
    received: list[str] = []

    async def follow() -> grpc.aio.AioRpcError:
        try:
            async for reply in stream:
                received.append(reply.entry.resource_id)  # noqa: PERF401 - seen as it arrives
        except grpc.aio.AioRpcError as exc:
            return exc
        raise AssertionError("the stream ended without a status")

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0.3)  # let the watch take its starting position
    await _partner(gov, "shop-a")
    await gov.operator.ProvisionTenant(
        pb.ProvisionTenantRequest(request_id="r1", tenant_id="filtered-out")
    )
    await _partner(gov, "shop-b")
    await eventually(lambda: list(received), lambda r: r == ["shop-a", "shop-b"])
    await gov.plane.server.stop(grace=1)
    error = await asyncio.wait_for(follower, 10)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "after_audit_id=" in (error.details() or "")
    assert received == ["shop-a", "shop-b"], "only new entries of the kind asked for"


async def test_watch_from_an_id_replays_then_follows(gov: Governed) -> None:
    await _partner(gov, "shop-0")
    mark = (
        await gov.operator.ListAuditEntries(pb.ListAuditEntriesRequest(resource_kind="partner"))
    ).entries[-1]
    await _partner(gov, "shop-1")
    await _partner(gov, "shop-2")
    stream = gov.operator.WatchAuditEntries(
        pb.WatchAuditEntriesRequest(after_audit_id=mark.audit_id), timeout=30
    )
    got = []
    async for reply in stream:
        got.append(reply.entry.resource_id)
        if len(got) == 2:
            break
    stream.cancel()
    assert got == ["shop-1", "shop-2"]
