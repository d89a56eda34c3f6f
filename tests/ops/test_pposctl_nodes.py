"""pposctl's node registry commands against a real plane: list with filters and
pages, cordon/drain with resource versions, re-images followed to the end by a
real node, node commands, the version rollup, health sweeps and live watches."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ppos.controlplane.noderegistry.v1 import node_pb2
from tests.ops.support import (
    IMAGE,
    NodeHandle,
    SignallingStream,
    appears,
    as_node,
    new_node,
    pposctl,
    start_pposctl,
)
from tests.support.servers import RunningPlane

TARGET = "registry.example/ppos/preflight-worker:7.4.2"
TARGET_DIGEST = "sha256:" + "b2" * 32


async def three_nodes(plane: RunningPlane) -> list[NodeHandle]:
    return [
        await new_node(plane, region="eu-west-1", cluster="c1", labels={"gpu": "true"}),
        await new_node(plane, region="eu-west-1", cluster="c2", ready=False),
        await new_node(plane, region="us-east-1", cluster="c1", labels={"gpu": "false"}),
    ]


async def test_list_filters_pages_and_formats(plane: RunningPlane) -> None:
    nodes = await three_nodes(plane)
    everything = await pposctl(plane, "nodes", "list")
    assert everything.code == 0, everything.stderr
    assert len(everything.lines()) == 4  # header and three nodes
    eu = await pposctl(plane, "nodes", "list", "--region", "eu-west-1", "-o", "name")
    assert sorted(eu.lines()) == sorted(f"node/{n.node_id}" for n in nodes[:2])
    not_ready = await pposctl(plane, "nodes", "ls", "--readiness", "not-ready", "-o", "name")
    assert not_ready.lines() == [f"node/{nodes[1].node_id}"]
    gpu = await pposctl(plane, "nodes", "list", "-l", "gpu=true", "-o", "name")
    assert gpu.lines() == [f"node/{nodes[0].node_id}"]
    paged = await pposctl(plane, "-o", "json", "nodes", "list", "--page-size", "1")
    data = paged.json()  # every page merged into one ListNodesResponse
    assert sorted(n["nodeId"] for n in data["nodes"]) == sorted(n.node_id for n in nodes)
    assert "nextPageToken" not in data
    assert int(data["resourceVersion"]) > 0
    limited = await pposctl(
        plane, "-o", "json", "nodes", "list", "--page-size", "1", "--limit", "2"
    )
    assert len(limited.json()["nodes"]) == 2
    bad = await pposctl(plane, "nodes", "list", "--readiness", "sleepy")
    assert bad.code == 1
    assert "choose from ready, not-ready" in bad.stderr


async def test_cordon_uncordon_drain_with_resource_versions(plane: RunningPlane) -> None:
    node = (await three_nodes(plane))[0]
    before = (await pposctl(plane, "-o", "json", "nodes", "get", node.node_id)).json()
    version = before["meta"]["resourceVersion"]
    cordoned = await pposctl(
        plane,
        "nodes",
        "cordon",
        node.node_id,
        "--reason",
        "disk errors",
        "--expected-version",
        version,
    )
    assert cordoned.code == 0, cordoned.stderr
    assert cordoned.stdout.strip() == f"node/{node.node_id} cordoned"
    shown = await pposctl(plane, "nodes", "get", node.node_id)
    assert "READY,Cordoned" in shown.stdout
    stale = await pposctl(plane, "nodes", "uncordon", node.node_id, "--expected-version", version)
    assert stale.code == 8  # the node changed since that version: nothing changes
    assert stale.stderr.startswith("Error from server (Conflict):")
    still = (await pposctl(plane, "-o", "json", "nodes", "get", node.node_id)).json()
    assert still["spec"].get("schedulable", False) is False
    assert (await pposctl(plane, "nodes", "uncordon", node.node_id)).code == 0
    drained = await pposctl(
        plane,
        "-o",
        "json",
        "nodes",
        "drain",
        node.node_id,
        "--reason",
        "kernel update",
        "--deadline",
        "1m",
    )
    assert drained.code == 0, drained.stderr
    assert drained.stderr == ""
    assert drained.json()["status"]["readiness"] == "READINESS_DRAINING"
    # The old spelling still works, with a warning on stderr.
    again = await pposctl(
        plane, "nodes", "drain", node.node_id, "--reason", "again", "--grace", "1m"
    )
    assert again.code == 8
    assert "warning: --grace is deprecated; use --deadline" in again.stderr
    no_reason = await pposctl(plane, "nodes", "cordon", node.node_id, "--reason", " ")
    assert no_reason.code in (1, 9)  # refused locally or by the server; never silently done


def _run_command(command_id: str) -> Any:
    def work(agent: Any) -> Any:
        reply = agent.heartbeat(ready=True, image=IMAGE, digest="sha256:" + "a1" * 32)
        assert [c.command_id for c in reply.commands] == [command_id]
        agent.report_command(command_id, node_pb2.NODE_COMMAND_STATE_ACKNOWLEDGED)
        return agent.report_command(command_id, node_pb2.NODE_COMMAND_STATE_SUCCEEDED, "done")

    return work


async def test_reimage_followed_until_the_node_reports_success(plane: RunningPlane) -> None:
    node = (await three_nodes(plane))[0]
    started = await pposctl(
        plane,
        "-o",
        "json",
        "nodes",
        "reimage",
        node.node_id,
        "--image",
        TARGET,
        "--digest",
        TARGET_DIGEST,
        "--reason",
        "engine crash loop",
        "--request-id",
        "ri-1",
    )
    assert started.code == 0, started.stderr
    command = started.json()
    assert command["state"] == "NODE_COMMAND_STATE_PENDING"
    repeat = await pposctl(
        plane,
        "nodes",
        "reimage",
        node.node_id,
        "--image",
        TARGET,
        "--digest",
        TARGET_DIGEST,
        "--reason",
        "engine crash loop",
        "--idempotency-key",
        "ri-1",
    )
    assert repeat.code == 0
    assert f"command/{command['commandId']} created" in repeat.stdout
    assert "idempotency key already used" in repeat.stderr
    assert "warning: --idempotency-key is deprecated; use --request-id" in repeat.stderr
    waiting = asyncio.create_task(
        pposctl(plane, "commands", "wait", command["commandId"], "--poll", "100ms")
    )
    await as_node(plane, node, _run_command(command["commandId"]))
    finished = await waiting
    assert finished.code == 0, finished.stderr
    assert finished.stdout.strip() == f"command/{command['commandId']} succeeded"
    listed = await pposctl(
        plane, "commands", "list", "--node", node.node_id, "--state", "succeeded", "-o", "name"
    )
    assert listed.lines() == [f"command/{command['commandId']}"]


async def test_cancelled_command_is_exit_14_when_waited_for(plane: RunningPlane) -> None:
    node = (await three_nodes(plane))[0]
    started = await pposctl(
        plane,
        "-o",
        "json",
        "nodes",
        "reimage",
        node.node_id,
        "--image",
        TARGET,
        "--digest",
        TARGET_DIGEST,
        "--reason",
        "rollout",
    )
    command_id = started.json()["commandId"]
    shown = await pposctl(plane, "commands", "get", command_id)
    assert "PENDING" in shown.stdout
    cancelled = await pposctl(plane, "commands", "cancel", command_id, "--reason", "wrong image")
    assert cancelled.code == 0, cancelled.stderr
    waited = await pposctl(plane, "commands", "wait", command_id)
    assert waited.code == 14
    assert waited.stdout.strip() == f"command/{command_id} cancelled"
    missing = await pposctl(plane, "commands", "get", "cmd_nosuch")
    assert missing.code == 6


async def test_version_rollup_and_health_sweep(plane: RunningPlane) -> None:
    await three_nodes(plane)
    rollup = await pposctl(plane, "-o", "json", "versions")
    assert rollup.code == 0, rollup.stderr
    counts = {(v["region"], v["container"]["image"]): v for v in rollup.json()["versions"]}
    assert counts[("eu-west-1", IMAGE)]["nodeCount"] == 2
    assert counts[("eu-west-1", IMAGE)]["readyCount"] == 1
    assert counts[("us-east-1", IMAGE)]["nodeCount"] == 1
    one = await pposctl(plane, "versions", "rollup", "--region", "us-east-1")
    assert len(one.lines()) == 2
    assert "us-east-1" in one.lines()[1]
    sweep = await pposctl(plane, "nodes", "sweep")
    assert sweep.code == 0, sweep.stderr
    assert "Marked NOT_READY:" in sweep.stdout


async def test_watch_prints_snapshot_then_changes_as_json_lines(plane: RunningPlane) -> None:
    nodes = await three_nodes(plane)
    stream = SignallingStream()
    watch = start_pposctl(
        plane,
        "-o",
        "json",
        "nodes",
        "watch",
        "--region",
        "eu-west-1",
        "--max-events",
        "4",
        stdout=stream,
    )
    await appears(stream, "WATCH_EVENT_TYPE_SNAPSHOT_END")
    assert (await pposctl(plane, "nodes", "cordon", nodes[0].node_id, "--reason", "x")).code == 0
    assert await asyncio.wait_for(watch, 30) == 0
    events = [line for line in stream.getvalue().splitlines() if line]
    kinds = [e.split('"type":"')[1].split('"')[0] for e in events]
    assert kinds[:3] == ["WATCH_EVENT_TYPE_SNAPSHOT"] * 2 + ["WATCH_EVENT_TYPE_SNAPSHOT_END"]
    assert kinds[3] == "WATCH_EVENT_TYPE_MODIFIED"
    assert nodes[0].node_id in events[3]


async def test_watch_live_view_on_a_terminal(
    plane: RunningPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "160")  # the terminal's width, as a shell exports it
    nodes = await three_nodes(plane)
    stream = SignallingStream(terminal=True)
    watch = start_pposctl(
        plane, "nodes", "watch", "--duration", "30s", "--max-events", "5", stdout=stream
    )
    await appears(stream, nodes[2].node_id)
    await pposctl(plane, "nodes", "drain", nodes[2].node_id, "--reason", "x")
    assert await asyncio.wait_for(watch, 30) == 0
    screen = stream.getvalue()
    assert "\x1b[" in screen  # drawn in place with terminal control sequences
    assert "DRAINING,Cordoned" in screen
    assert "resource version" in screen


async def test_watch_prints_one_line_per_event_into_a_pipe(plane: RunningPlane) -> None:
    nodes = await three_nodes(plane)
    result = await pposctl(plane, "nodes", "watch", "--region", "us-east-1", "--max-events", "2")
    assert result.code == 0, result.stderr
    header, row = result.lines()
    assert header.split()[:3] == ["EVENT", "RV", "NODE"]
    assert row.split()[0] == "SNAPSHOT"
    assert row.split()[2] == nodes[2].node_id
