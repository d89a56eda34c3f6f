"""The operator session of docs/operator-guide.md, run exactly as written there:
each `<!-- session: NAME -->` block is a bash script run against a real server
with grpcurl, buf curl, pposctl and the Node.js client, the token only in a
file. A block added to the guide without an expectation here fails the test."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from tests.ops.support import new_node
from tests.support.external import ROOT, run
from tests.support.servers import RunningPlane

pytestmark = pytest.mark.interop

GUIDE = ROOT / "docs" / "operator-guide.md"
BLOCK = re.compile(r"<!-- session: ([a-z-]+) -->\s*```bash\n(.*?)```", re.S)
SERVICES = [
    "grpc.health.v1.Health",
    "ppos.controlplane.auth.v1.JwksService",
    "ppos.controlplane.governance.v1.GovernanceService",
    "ppos.controlplane.noderegistry.v1.NodeRegistryService",
    "ppos.controlplane.registrysync.v1.RegistrySyncService",
]


def session() -> dict[str, str]:
    return dict(BLOCK.findall(GUIDE.read_text()))


def json_objects(text: str) -> list[dict[str, object]]:
    """The JSON objects in a tool's output (grpcurl pretty-prints, others print lines)."""
    decoder, found, index = json.JSONDecoder(), [], 0
    while (start := text.find("{", index)) != -1:
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            index = start + 1
            continue
        found.append(value)
        index = end
    return found


@pytest.fixture
def shell(plane: RunningPlane, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> object:
    # The token file lives outside tmp_path, which the plane fixture scans for the token.
    token_file = tmp_path_factory.mktemp("operator") / "control-token"
    token_file.write_text(plane.token + "\n")
    token_file.chmod(0o600)
    workdir = tmp_path / "session"
    workdir.mkdir()
    (workdir / "tests").symlink_to(ROOT / "tests")  # the guide's relative paths
    path = os.pathsep.join(
        [str(Path(sys.executable).parent), str(ROOT / "node_modules" / ".bin"), os.environ["PATH"]]
    )
    env = {"PATH": path, "PPOS_ADDRESS": plane.address, "PPOS_CONTROL_TOKEN_FILE": str(token_file)}

    async def step(name: str) -> tuple[int, str, Path]:
        script = session()[name]
        done = await run("bash", "-c", f"cd {workdir} && {script}", env=env, limit=120)
        output = done.stdout + done.stderr
        assert plane.token not in output, f"step {name} printed the token"
        return done.code, output, workdir

    return step


async def test_the_guide_has_every_step_this_test_checks() -> None:
    assert set(session()) == {
        "health",
        "list-services",
        "without-token",
        "with-token",
        "rich-error",
        "pposctl",
        "stream",
    }


async def test_health_and_services_by_reflection(shell) -> None:  # type: ignore[no-untyped-def]
    code, output, _ = await shell("health")
    assert code == 0, output
    assert "SERVING" in output
    code, output, _ = await shell("list-services")
    assert code == 0, output
    for service in SERVICES:
        assert service in output
    assert "ppos.controlplane.noderegistry.v1.NodeRegistryService/CreateEnrollment" in output
    assert "grpc.health.v1.Health.Check is a method" in output
    assert "google.rpc.BadRequest is a message" in output


async def test_calls_without_and_with_the_token(shell) -> None:  # type: ignore[no-untyped-def]
    code, output, _ = await shell("without-token")
    assert code != 0
    assert "Unauthenticated" in output
    assert "missing credential" in output
    code, output, _ = await shell("with-token")
    assert code == 0, output
    replies = json_objects(output)
    assert len(replies) == 2  # grpcurl, then buf curl
    assert str(replies[0]["enrollment_token"]).startswith("ppos_enroll_")  # .proto names
    assert str(replies[1]["enrollmentToken"]).startswith("ppos_enroll_")  # JSON names
    code, output, _ = await shell("rich-error")
    assert code != 0
    (status,) = json_objects(output)  # -format-error: the google.rpc.Status as JSON
    assert status["code"] == 3  # INVALID_ARGUMENT
    kinds = {str(d["@type"]).rsplit("/", 1)[-1]: d for d in status["details"]}  # type: ignore[union-attr]
    assert kinds["google.rpc.ErrorInfo"]["reason"] == "INVALID_ARGUMENT"
    assert kinds["google.rpc.BadRequest"]["field_violations"][0]["field"] == "region"


async def test_pposctl_and_the_node_client(shell) -> None:  # type: ignore[no-untyped-def]
    code, output, workdir = await shell("pposctl")
    assert code == 0, output
    assert (workdir / "node-1.enroll").read_text().startswith("ppos_enroll_")
    assert "Error from server (NotFound): node 'node_does_not_exist' not found" in output
    assert "exit code 6" in output
    steps = {str(o["step"]): o for o in json_objects(output) if "step" in o}
    assert steps["jwks"]["ok"] is True
    assert steps["without-token"]["status"] == "UNAUTHENTICATED"
    assert steps["create-enrollment"]["ok"] is True
    assert steps["get-missing-node"]["status"] == "NOT_FOUND"


async def test_streaming_node_status(plane: RunningPlane, shell) -> None:  # type: ignore[no-untyped-def]
    node = await new_node(plane, region="eu-west-1")
    code, output, _ = await shell("stream")
    assert code == 0, output
    # grpcurl: the snapshot, then the stream runs until -max-time
    assert "WATCH_EVENT_TYPE_SNAPSHOT_END" in output
    events = json_objects(output)
    grpcurl_nodes = [
        e["node"]["node_id"]  # type: ignore[index]
        for message in events
        for e in message.get("events", [])  # type: ignore[attr-defined]
        if isinstance(e, dict) and "node" in e
    ]
    assert node.node_id in grpcurl_nodes
    # pposctl -o json: one WatchEvent per line
    pposctl_nodes = [
        e["node"]["nodeId"]
        for e in events
        if e.get("type") == "WATCH_EVENT_TYPE_SNAPSHOT" and "node" in e
    ]  # type: ignore[index]
    assert pposctl_nodes == [node.node_id]
    # the Node.js client: one line per event, ending after --max-events 2
    watched = [e for e in events if e.get("step") == "watch"]
    assert [e["type"] for e in watched] == [
        "WATCH_EVENT_TYPE_SNAPSHOT",
        "WATCH_EVENT_TYPE_SNAPSHOT_END",
    ]
    assert watched[0]["nodeId"] == node.node_id
    assert watched[0]["readiness"] == "READINESS_READY"
