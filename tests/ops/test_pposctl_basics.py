"""pposctl against a real control plane: the commands whose RPCs exist on every
server, exit codes per failure class, and one-line errors."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.ops.support import DIGEST, IMAGE, new_node, operator_env, pposctl
from tests.support.servers import RunningPlane


async def test_nodes_get_shows_a_registered_node(plane: RunningPlane) -> None:
    node = await new_node(plane, region="eu-west-1", cluster="c7", labels={"gpu": "true"})
    table = await pposctl(plane, "nodes", "get", node.node_id)
    assert table.code == 0, table.stderr
    header, row = table.lines()
    assert header.split()[:4] == ["NODE", "REGION", "CLUSTER", "STATUS"]
    assert row.split()[:6] == [node.node_id, "eu-west-1", "c7", "READY", IMAGE, "1/4"]

    wide = await pposctl(plane, "nodes", "get", node.node_id, "-o", "wide")
    assert DIGEST in wide.stdout
    assert "gpu=true" in wide.stdout

    as_json = await pposctl(plane, "-o", "json", "nodes", "get", node.node_id)
    data = as_json.json()  # the Node in the proto3 JSON mapping, like grpcurl prints it
    assert data["nodeId"] == node.node_id
    assert data["status"]["readiness"] == "READINESS_READY"
    assert data["status"]["container"] == {"image": IMAGE, "digest": DIGEST}

    names = await pposctl(plane, "nodes", "get", node.node_id, "-o", "name")
    assert names.stdout.strip() == f"node/{node.node_id}"

    described = await pposctl(plane, "nodes", "describe", node.node_id)
    assert described.code == 0
    assert "Readiness:" in described.stdout
    assert "READY (HeartbeatReady)" in described.stdout


async def test_missing_node_is_exit_6_with_one_line(plane: RunningPlane) -> None:
    result = await pposctl(plane, "nodes", "get", "node_nosuch")
    assert result.code == 6
    assert result.stdout == ""
    line = result.stderr.strip()
    assert "\n" not in line
    assert line.startswith("Error from server (NotFound): node 'node_nosuch' not found")
    assert "request req_" in line


async def test_refused_fields_are_exit_9_and_listed(plane: RunningPlane) -> None:
    result = await pposctl(
        plane, "enrollments", "create", "--region", "Not A Region", "--ttl", "5s"
    )
    assert result.code == 9
    first, *fields = result.stderr.strip().splitlines()
    assert first.startswith("Error from server (InvalidArgument): invalid request:")
    assert sorted(f.split(":")[0].strip() for f in fields) == ["region", "ttl"]


async def test_enrollment_token_printed_or_written_to_a_private_file(
    plane: RunningPlane, tmp_path: Path
) -> None:
    shown = await pposctl(plane, "enrollments", "create", "--region", "eu-west-1", "-l", "a=b")
    assert shown.code == 0, shown.stderr
    assert "Token:" in shown.stdout
    assert "ppos_enroll_" in shown.stdout

    out = tmp_path / "node.enroll"
    written = await pposctl(
        plane,
        "-o",
        "json",
        "enrollments",
        "create",
        "--region",
        "eu-west-1",
        "--token-out",
        str(out),
    )
    assert written.code == 0, written.stderr
    assert "enrollmentToken" not in written.json()  # in the file, not echoed
    assert out.read_text().startswith("ppos_enroll_")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    again = await pposctl(
        plane, "enrollments", "create", "--region", "eu-west-1", "--token-out", str(out)
    )
    assert again.code == 1
    assert "exists" in again.stderr


async def test_token_problems_and_usage_errors_have_their_own_exit_codes(
    plane: RunningPlane, tmp_path_factory: pytest.TempPathFactory
) -> None:
    no_token = {"PPOS_ADDRESS": plane.address}
    result = await pposctl(plane, "nodes", "get", "node_x", env=no_token)
    assert result.code == 2
    assert "no control token" in result.stderr
    assert "PPOS_CONTROL_TOKEN_FILE" in result.stderr

    wrong = operator_env(plane, PPOS_CONTROL_TOKEN="ppos_ct_" + "w" * 40)
    result = await pposctl(plane, "nodes", "get", "node_x", env=wrong)
    assert result.code == 4
    assert result.stderr.startswith("Error from server (Unauthenticated):")
    assert "w" * 40 not in result.stderr  # the presented credential is never echoed

    missing_file = {"PPOS_ADDRESS": plane.address, "PPOS_CONTROL_TOKEN_FILE": "/nonexistent/t"}
    result = await pposctl(plane, "nodes", "get", "node_x", env=missing_file)
    assert result.code == 2
    assert "cannot read token file /nonexistent/t" in result.stderr

    result = await pposctl(plane, "nodes", "cordon", "node_x")  # --reason missing
    assert result.code == 1
    assert "--reason" in result.stderr
    assert "pposctl nodes cordon --help" in result.stderr
    result = await pposctl(plane, "nodes", "frobnicate")
    assert result.code == 1


async def test_token_file_is_read_and_group_readable_files_are_flagged(
    plane: RunningPlane, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Outside the test's tmp_path: the plane fixture scans that for the canary token.
    token_file = tmp_path_factory.mktemp("operator") / "control-token"
    token_file.write_text(plane.token + "\n")
    token_file.chmod(0o600)
    node = await new_node(plane)
    env = {"PPOS_ADDRESS": plane.address}
    result = await pposctl(
        plane, "--token-file", str(token_file), "nodes", "get", node.node_id, env=env
    )
    assert result.code == 0, result.stderr
    assert result.stderr == ""
    token_file.chmod(0o644)  # readable by all, but its directory keeps others out
    quiet = await pposctl(
        plane,
        "nodes",
        "get",
        node.node_id,
        env={**env, "PPOS_CONTROL_TOKEN_FILE": str(token_file)},
    )
    assert quiet.code == 0
    assert quiet.stderr == ""
    token_file.parent.chmod(0o755)
    result = await pposctl(
        plane, "nodes", "get", node.node_id, env={**env, "PPOS_CONTROL_TOKEN_FILE": str(token_file)}
    )
    assert result.code == 0
    assert "accessible by other users (mode 0644)" in result.stderr
    token_file.unlink()


async def test_unreachable_server_is_exit_3(plane: RunningPlane) -> None:
    env = operator_env(plane, PPOS_ADDRESS="127.0.0.1:1", PPOS_TIMEOUT="2s")
    result = await pposctl(plane, "nodes", "get", "node_x", env=env)
    assert result.code == 3
    assert result.stderr.startswith("pposctl: cannot reach the control plane at 127.0.0.1:1")


async def test_health_and_jwks_need_no_token(plane: RunningPlane) -> None:
    env = {"PPOS_ADDRESS": plane.address}
    health = await pposctl(plane, "health", env=env)
    assert health.code == 0, health.stderr
    assert "ppos.controlplane.noderegistry.v1.NodeRegistryService   SERVING" in health.stdout
    quiet = await pposctl(plane, "health", "-q", "governance", env=env)
    assert (quiet.code, quiet.stdout) == (0, "")
    unknown = await pposctl(plane, "health", "-q", "no.such.Service", env=env)
    assert unknown.code == 15

    keys = await pposctl(plane, "jwks", env=env)
    assert keys.code == 0
    assert "ES256" in keys.stdout
    assert "yes" in keys.stdout
    raw = await pposctl(plane, "-o", "json", "jwks", env=env)
    assert raw.json()["activeKid"]


async def test_config_view_names_the_token_source_never_the_token(plane: RunningPlane) -> None:
    result = await pposctl(plane, "config", "view")
    assert result.code == 0
    assert "Token:" in result.stdout
    assert "$PPOS_CONTROL_TOKEN" in result.stdout
    assert plane.token not in result.stdout + result.stderr


async def test_help_everywhere(plane: RunningPlane) -> None:
    for argv in (
        ["--help"],
        ["nodes", "--help"],
        ["sync", "sweep", "start", "--help"],
        ["policies", "dry-run", "--help"],
    ):
        result = await pposctl(plane, *argv)
        assert result.code == 0, argv
    top = await pposctl(plane, "--help")
    assert "exit codes:" in top.stdout
