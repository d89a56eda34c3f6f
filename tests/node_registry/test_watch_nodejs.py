"""A Node.js subscriber (@grpc/grpc-js, @grpc/proto-loader) watches live heartbeats.

The server is real (a plane requiring mutual TLS, both backends); `node` runs
tests/interop/node/watch_nodes.js as a subprocess, with the operator token and
its TLS files in its environment (the token never on its command line), and
prints every event it gets.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import grpc_tools
import pytest

from tests.node_registry.helpers import enroll, ready_node
from tests.support.servers import RunningPlane

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "interop" / "node" / "watch_nodes.js"
PROTO_DIRS = [ROOT / "protos", Path(grpc_tools.__file__).parent / "_proto"]

pytestmark = pytest.mark.interop


async def _line(stream: asyncio.StreamReader) -> dict[str, Any]:
    raw = await asyncio.wait_for(stream.readline(), 30)
    if not raw:
        raise AssertionError("the Node.js subscriber exited early")
    record: dict[str, Any] = json.loads(raw)
    return record


@pytest.fixture
def plane(mtls_plane: RunningPlane) -> RunningPlane:
    return mtls_plane


async def test_nodejs_subscriber_receives_live_heartbeat_changes(plane: RunningPlane) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: run `make setup` (Node.js is part of the tool chain)")
    first = await ready_node(plane)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PPOS_ADDRESS": plane.address,
        "PPOS_CONTROL_TOKEN": plane.token,
        "PPOS_PROTO_DIRS": os.pathsep.join(str(p) for p in PROTO_DIRS),
        "PPOS_WATCH_CHANGES": "3",
        **plane.tls_env(),
    }
    assert env["PPOS_CERT_FILE"]  # mutual TLS
    process = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert plane.token not in " ".join([node, str(SCRIPT)])  # never on the command line
    try:
        seen = []
        while True:
            record = await _line(process.stdout)
            seen.append(record)
            if record.get("type") == "WATCH_EVENT_TYPE_SNAPSHOT_END":
                break
        assert [r["node_id"] for r in seen[:-1]] == [first.node_id]
        snapshot_version = int(seen[-1]["resource_version"])
        await first.heartbeat(ready=True, slots_in_use=1)
        await first.heartbeat(ready=False, not_ready_reason="Maintenance", slots_in_use=2)
        second = await enroll(plane)
        changes = []
        while True:
            record = await _line(process.stdout)
            if record.get("done"):
                break
            assert "error" not in record, record
            changes.append(record)
        assert [(c["type"], c["node_id"]) for c in changes] == [
            ("WATCH_EVENT_TYPE_MODIFIED", first.node_id),
            ("WATCH_EVENT_TYPE_MODIFIED", first.node_id),
            ("WATCH_EVENT_TYPE_ADDED", second.node_id),
        ]
        assert [c["slots_in_use"] for c in changes[:2]] == [1, 2]
        assert changes[1]["readiness"] == "READINESS_NOT_READY"
        versions = [int(c["resource_version"]) for c in changes]
        assert snapshot_version < versions[0] < versions[1] < versions[2]
        assert all(c["node_resource_version"] == c["resource_version"] for c in changes)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    stderr = await process.stderr.read() if process.stderr else b""
    assert plane.token.encode() not in stderr
