"""Operator RPCs: get, list with filters and pages, version rollup, cordon, drain."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import duration_pb2

from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from tests.node_registry.helpers import (
    NEW_DIGEST,
    NEW_IMAGE,
    db_state,
    enroll,
    ready_node,
    refusal,
    registry,
    scalar,
)
from tests.support.servers import RunningPlane


async def test_unknown_node_is_not_found_with_resource_info(plane: RunningPlane) -> None:
    stub = registry(plane)
    for call in (
        stub.GetNode(pb.GetNodeRequest(node_id="node_nope"), metadata=plane.operator),
        stub.CordonNode(
            pb.CordonNodeRequest(node_id="node_nope", reason="maintenance"),
            metadata=plane.operator,
        ),
        stub.DrainNode(
            pb.DrainNodeRequest(node_id="node_nope", reason="maintenance"),
            metadata=plane.operator,
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        seen = refusal(caught.value)
        assert seen.code == grpc.StatusCode.NOT_FOUND
        assert seen.metadata["resource_name"] == "node_nope"


async def _fleet(plane: RunningPlane) -> dict[str, str]:
    """Five nodes in two regions with different labels, images and readiness."""
    names = {}
    names["a"] = (await ready_node(plane, labels={"gpu": "true", "tier": "core"})).node_id
    names["b"] = (await ready_node(plane, labels={"gpu": "false", "tier": "edge"})).node_id
    c = await ready_node(plane, labels={"tier": "edge"}, image=NEW_IMAGE, digest=NEW_DIGEST)
    names["c"] = c.node_id
    await c.heartbeat(ready=False, not_ready_reason="DiskPressure")
    names["d"] = (await ready_node(plane, region="us-east-1", labels={"gpu": "true"})).node_id
    names["e"] = (await enroll(plane, region="us-east-1")).node_id  # never registered
    return names


async def _list(plane: RunningPlane, **filters: object) -> set[str]:
    response = await registry(plane).ListNodes(
        pb.ListNodesRequest(filter=node_pb2.NodeFilter(**filters)),  # type: ignore[arg-type]
        metadata=plane.operator,
    )
    return {node.node_id for node in response.nodes}


async def test_list_filters_by_region_readiness_image_and_labels(plane: RunningPlane) -> None:
    n = await _fleet(plane)
    assert await _list(plane) == set(n.values())
    assert await _list(plane, region="us-east-1") == {n["d"], n["e"]}
    ready = node_pb2.READINESS_READY
    assert await _list(plane, readiness=[ready]) == {n["a"], n["b"], n["d"]}
    assert await _list(plane, container_image=NEW_IMAGE) == {n["c"]}
    assert await _list(plane, label_selector="gpu=true") == {n["a"], n["d"]}
    assert await _list(plane, label_selector="gpu==true,tier=core") == {n["a"]}
    # k!=v also matches nodes without the key, as in Kubernetes.
    assert await _list(plane, label_selector="gpu!=true") == {n["b"], n["c"], n["e"]}
    assert await _list(plane, label_selector="tier") == {n["a"], n["b"], n["c"]}
    assert await _list(plane, label_selector="!tier,region") == set()
    assert await _list(plane, label_selector="!tier") == {n["d"], n["e"]}
    assert await _list(plane, region="eu-west-1", label_selector="tier=edge") == {n["b"], n["c"]}


async def test_list_pages_through_everything_once(plane: RunningPlane) -> None:
    n = await _fleet(plane)
    stub = registry(plane)
    seen: list[str] = []
    token = ""
    versions = set()
    while True:
        page = await stub.ListNodes(
            pb.ListNodesRequest(page_size=2, page_token=token), metadata=plane.operator
        )
        seen += [node.node_id for node in page.nodes]
        versions.add(page.resource_version)
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(n.values())
    assert len(seen) == len(set(seen))
    head = scalar(plane.database_url, "SELECT max(event_id) FROM node_events")
    assert versions == {head}


async def test_page_tokens_are_bound_to_their_filter_and_cannot_be_forged(
    plane: RunningPlane,
) -> None:
    await _fleet(plane)
    stub = registry(plane)
    first = await stub.ListNodes(pb.ListNodesRequest(page_size=1), metadata=plane.operator)
    for request in (
        pb.ListNodesRequest(
            page_token=first.next_page_token, filter=node_pb2.NodeFilter(region="us-east-1")
        ),
        pb.ListNodesRequest(page_token="not-a-token"),
        pb.ListNodesRequest(page_size=-1),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListNodes(request, metadata=plane.operator)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "selector",
    ["gpu=", "=true", "gpu=true,", "bad key=1", "gpu in (true)", "gpu=tru e", "a=b=c", "!"],
)
async def test_malformed_label_selectors_are_refused_with_the_field(
    plane: RunningPlane, selector: str
) -> None:
    if selector == "gpu=":
        # An empty value is valid Kubernetes label syntax: it selects gpu="".
        assert await _list(plane, label_selector=selector) == set()
        return
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _list(plane, label_selector=selector)
    seen = refusal(caught.value)
    assert seen.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(seen.field_violations) == {"filter.label_selector"}


async def test_version_rollup_counts_per_region_and_image(plane: RunningPlane) -> None:
    await _fleet(plane)
    rollup = await registry(plane).GetVersionRollup(
        pb.GetVersionRollupRequest(), metadata=plane.operator
    )
    got = {
        (v.region, v.container.image, v.container.digest): (v.node_count, v.ready_count)
        for v in rollup.versions
    }
    old = "registry.example/ppos/preflight-worker:7.4.1"
    assert got == {
        ("eu-west-1", old, "sha256:" + "a" * 64): (2, 2),
        ("eu-west-1", NEW_IMAGE, NEW_DIGEST): (1, 0),
        ("us-east-1", old, "sha256:" + "a" * 64): (1, 1),
    }
    one = await registry(plane).GetVersionRollup(
        pb.GetVersionRollupRequest(region="us-east-1"), metadata=plane.operator
    )
    assert [(v.region, v.node_count) for v in one.versions] == [("us-east-1", 1)]


async def test_cordon_uncordon_with_versions_and_audit(plane: RunningPlane) -> None:
    agent = await ready_node(plane)
    stub = registry(plane)
    node = (
        await stub.GetNode(pb.GetNodeRequest(node_id=agent.node_id), metadata=plane.operator)
    ).node
    cordoned = (
        await stub.CordonNode(
            pb.CordonNodeRequest(
                node_id=agent.node_id,
                reason="disk replacement",
                expected_resource_version=node.meta.resource_version,
            ),
            metadata=plane.operator,
        )
    ).node
    assert not cordoned.spec.schedulable
    assert cordoned.spec.unschedulable_reason == "disk replacement"
    assert cordoned.status.readiness == node_pb2.READINESS_READY  # separate axes
    schedulable = {c.type: c for c in cordoned.status.conditions}["Schedulable"]
    assert schedulable.message == "disk replacement"
    # Retrying the same cordon changes nothing.
    again = (
        await stub.CordonNode(
            pb.CordonNodeRequest(node_id=agent.node_id, reason="disk replacement"),
            metadata=plane.operator,
        )
    ).node
    assert again.meta.resource_version == cordoned.meta.resource_version
    # A stale version is refused and changes nothing.
    before = db_state(plane.database_url)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UncordonNode(
            pb.UncordonNodeRequest(
                node_id=agent.node_id, expected_resource_version=node.meta.resource_version
            ),
            metadata=plane.operator,
        )
    seen = refusal(caught.value)
    assert (seen.code, seen.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "STALE_RESOURCE_VERSION",
    )
    assert seen.metadata["current_resource_version"] == cordoned.meta.resource_version
    assert seen.preconditions[0][0] == "RESOURCE_VERSION"
    assert db_state(plane.database_url) == before
    uncordoned = (
        await stub.UncordonNode(
            pb.UncordonNodeRequest(
                node_id=agent.node_id, expected_resource_version=cordoned.meta.resource_version
            ),
            metadata=plane.operator,
        )
    ).node
    assert uncordoned.spec.schedulable
    rows = scalar(
        plane.database_url,
        "SELECT count(*) FROM audit_log WHERE resource_id = :n AND actor_kind = 'operator' "
        "AND (method LIKE '%/CordonNode' OR method LIKE '%/UncordonNode')",
        n=agent.node_id,
    )
    assert rows == 2


async def test_cordon_requires_a_reason_and_a_well_formed_version(plane: RunningPlane) -> None:
    agent = await ready_node(plane)
    before = db_state(plane.database_url)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await registry(plane).CordonNode(
            pb.CordonNodeRequest(node_id=agent.node_id, expected_resource_version="v7"),
            metadata=plane.operator,
        )
    seen = refusal(caught.value)
    assert set(seen.field_violations) == {"reason", "expected_resource_version"}
    assert db_state(plane.database_url) == before


async def test_drain_finishes_when_the_node_reports_no_slots_in_use(plane: RunningPlane) -> None:
    agent = await ready_node(plane)
    await agent.heartbeat(ready=True, slots_in_use=2)
    stub = registry(plane)
    drained = (
        await stub.DrainNode(
            pb.DrainNodeRequest(
                node_id=agent.node_id,
                reason="kernel upgrade",
                grace=duration_pb2.Duration(seconds=60),
            ),
            metadata=plane.operator,
        )
    ).node
    assert drained.status.readiness == node_pb2.READINESS_DRAINING
    assert not drained.spec.schedulable
    assert drained.spec.drain_deadline.seconds > 0
    still = (await agent.heartbeat(ready=True, slots_in_use=1)).node
    assert still.status.readiness == node_pb2.READINESS_DRAINING
    done = (await agent.heartbeat(ready=True, slots_in_use=0)).node
    assert (done.status.readiness, done.status.readiness_reason) == (
        node_pb2.READINESS_NOT_READY,
        "Drained",
    )
    assert not done.spec.schedulable  # stays cordoned until an operator uncordons
    back = (
        await stub.UncordonNode(
            pb.UncordonNodeRequest(node_id=agent.node_id), metadata=plane.operator
        )
    ).node
    assert back.spec.schedulable
    assert not back.spec.HasField("drain_deadline")
    assert (await agent.heartbeat(ready=True)).node.status.readiness == node_pb2.READINESS_READY


async def test_impossible_drains_are_refused_and_change_nothing(plane: RunningPlane) -> None:
    stub = registry(plane)
    draining = await ready_node(plane)
    await stub.DrainNode(
        pb.DrainNodeRequest(node_id=draining.node_id, reason="first"), metadata=plane.operator
    )
    unregistered = await enroll(plane)
    before = db_state(plane.database_url)
    for node_id, readiness in ((draining.node_id, "DRAINING"), (unregistered.node_id, "NOT_READY")):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.DrainNode(
                pb.DrainNodeRequest(node_id=node_id, reason="again"), metadata=plane.operator
            )
        seen = refusal(caught.value)
        assert (seen.code, seen.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "NODE_NOT_DRAINABLE",
        )
        assert seen.metadata["readiness"] == readiness
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.DrainNode(
            pb.DrainNodeRequest(
                node_id=draining.node_id, reason="x", grace=duration_pb2.Duration(seconds=-5)
            ),
            metadata=plane.operator,
        )
    assert set(refusal(caught.value).field_violations) == {"grace"}
    assert db_state(plane.database_url) == before


async def test_audit_snapshots_hold_before_and_after_without_credentials(
    plane: RunningPlane,
) -> None:
    agent = await ready_node(plane)
    await registry(plane).CordonNode(
        pb.CordonNodeRequest(node_id=agent.node_id, reason="inspection"), metadata=plane.operator
    )
    raw = scalar(
        plane.database_url,
        "SELECT before_json || '|' || after_json FROM audit_log WHERE resource_id = :n "
        "AND method LIKE '%CordonNode'",
        n=agent.node_id,
    )
    before, after = (json.loads(part) for part in raw.split("|"))
    assert before["schedulable"] is True
    assert after["schedulable"] is False
    assert agent.credential not in raw


async def _walk(
    plane: RunningPlane, order: int, descending: bool, size: int
) -> list[node_pb2.Node]:
    """Every node, page by page, in `order`."""
    stub = registry(plane)
    nodes: list[node_pb2.Node] = []
    token = ""
    while True:
        page = await stub.ListNodes(
            pb.ListNodesRequest(
                page_size=size, page_token=token, order_by=order, descending=descending
            ),  # type: ignore[arg-type]
            metadata=plane.operator,
        )
        nodes += page.nodes
        token = page.next_page_token
        if not token:
            return nodes


async def test_list_sorts_by_each_order_both_ways_and_pages_keep_the_order(
    plane: RunningPlane,
) -> None:
    """Every order is total (ties broken by node id) and paged by keyset: walking it in
    pages of two returns each node once, in the order a sort of the whole set gives."""
    n = await _fleet(plane)
    await ready_node(plane, region="us-east-1", image=NEW_IMAGE, digest=NEW_DIGEST)
    everything = await _walk(plane, pb.NODE_ORDER_NODE_ID, False, 1000)
    assert len(everything) == len(n) + 1
    keys = {
        pb.NODE_ORDER_NODE_ID: lambda node: (node.node_id,),
        pb.NODE_ORDER_REGION: lambda node: (node.spec.region, node.node_id),
        pb.NODE_ORDER_READINESS: lambda node: (
            node_pb2.Readiness.Name(node.status.readiness).removeprefix("READINESS_"),
            node.node_id,
        ),
        pb.NODE_ORDER_CONTAINER_IMAGE: lambda node: (node.status.container.image, node.node_id),
    }
    for order, key in keys.items():
        for descending in (False, True):
            walked = [node.node_id for node in await _walk(plane, order, descending, 2)]
            expected = sorted(everything, key=key, reverse=descending)
            assert walked == [node.node_id for node in expected], (order, descending)
    default = [node.node_id for node in await _walk(plane, pb.NODE_ORDER_UNSPECIFIED, False, 2)]
    assert default == [node.node_id for node in everything]


async def test_page_tokens_are_bound_to_their_order_and_direction(plane: RunningPlane) -> None:
    await _fleet(plane)
    stub = registry(plane)
    by_region = await stub.ListNodes(
        pb.ListNodesRequest(page_size=1, order_by=pb.NODE_ORDER_REGION), metadata=plane.operator
    )
    by_id = await stub.ListNodes(pb.ListNodesRequest(page_size=1), metadata=plane.operator)
    # The node-id order: the same tokens whether named or left unset.
    named = await stub.ListNodes(
        pb.ListNodesRequest(
            page_size=1, page_token=by_id.next_page_token, order_by=pb.NODE_ORDER_NODE_ID
        ),
        metadata=plane.operator,
    )
    assert named.nodes[0].node_id > by_id.nodes[0].node_id
    for request in (
        pb.ListNodesRequest(page_token=by_region.next_page_token),
        pb.ListNodesRequest(
            page_token=by_region.next_page_token, order_by=pb.NODE_ORDER_REGION, descending=True
        ),
        pb.ListNodesRequest(page_token=by_id.next_page_token, order_by=pb.NODE_ORDER_READINESS),
        pb.ListNodesRequest(order_by=99),  # type: ignore[arg-type]
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListNodes(request, metadata=plane.operator)
        seen = refusal(caught.value)
        assert seen.code == grpc.StatusCode.INVALID_ARGUMENT
        assert seen.field_violations.keys() & {"page_token", "order_by"}, seen
