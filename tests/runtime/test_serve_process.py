"""`ppos-control-plane serve` as a real process: start, answer, stop on signals,
refuse bad configuration with a clear message and a distinct exit code."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support.processes import ServeProcess, run_cli, spawn_serve

EXIT_CONFIG = 2


@pytest.fixture
def serve(database_url: str, tmp_path: Path, canary_token: str) -> Iterator[ServeProcess]:
    process = spawn_serve(data_dir=tmp_path / "data", token=canary_token, database_url=database_url)
    try:
        yield process
    finally:
        process.kill()
        assert canary_token not in process.log(), "control token printed by the server"


def _events(process: ServeProcess) -> list[dict[str, object]]:
    return [json.loads(line) for line in process.log().splitlines() if line.startswith("{")]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serves_then_stops_cleanly_on_signal(serve: ServeProcess, signum: int) -> None:
    serve.wait_serving()
    serve.signal(signum)
    assert serve.wait(timeout=30) == 0
    names = [event["event"] for event in _events(serve)]
    assert "server.started" in names
    assert names[-1] == "server.stopped"
    started = next(e for e in _events(serve) if e["event"] == "server.started")
    assert started["services"] == ["governance", "noderegistry", "registrysync"]
    assert started["event_loop"] == "uvloop"  # the default


def test_serves_on_the_standard_library_loop_when_asked(
    database_url: str, tmp_path: Path, canary_token: str
) -> None:
    process = spawn_serve(
        data_dir=tmp_path / "data",
        token=canary_token,
        database_url=database_url,
        env={"PPOS_EVENT_LOOP": "asyncio"},
    )
    try:
        process.wait_serving()
        started = next(e for e in _events(process) if e["event"] == "server.started")
        assert started["event_loop"] == "asyncio"
    finally:
        process.signal()
        assert process.wait() == 0


def test_one_service_alone(database_url: str, tmp_path: Path, canary_token: str) -> None:
    process = spawn_serve(
        data_dir=tmp_path / "data",
        token=canary_token,
        database_url=database_url,
        args=("--service", "noderegistry"),
    )
    try:
        process.wait_serving()
        with grpc.insecure_channel(process.address) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            replies = stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
            names = {s.name for r in replies for s in r.list_services_response.service}
        assert "ppos.controlplane.noderegistry.v1.NodeRegistryService" in names
        assert "ppos.controlplane.governance.v1.GovernanceService" not in names
        assert "ppos.controlplane.registrysync.v1.RegistrySyncService" not in names
    finally:
        process.signal()
        assert process.wait() == 0


BAD_CONFIGS = [
    ("bad-listen", ["--listen", "nowhere"], {}, "--listen"),
    ("unknown-service", ["--service", "billing"], {}, "--service"),
    ("unknown-event-loop", ["--event-loop", "trio"], {}, "--event-loop"),
    ("bad-duration", [], {"PPOS_SHUTDOWN_GRACE": "soon"}, "PPOS_SHUTDOWN_GRACE"),
    ("bad-boolean", [], {"PPOS_MIGRATE_ON_START": "perhaps"}, "PPOS_MIGRATE_ON_START"),
    ("weak-token", [], {"PPOS_CONTROL_TOKEN": "short"}, "at least 32 characters"),
    ("no-token", [], {"PPOS_CONTROL_TOKEN": ""}, "no control token"),
    ("bad-database", [], {"PPOS_DATABASE_URL": "mysql://x/y"}, "unsupported database"),
    ("bad-ttl", ["--preflight-jwt-ttl", "1h"], {}, "--preflight-jwt-ttl"),
    ("missing-key-file", [], {"PPOS_SIGNING_KEY_FILE": "/nonexistent/key.pem"}, "signing key"),
    ("plaintext-off-loopback", ["--listen", "0.0.0.0:0"], {}, "PPOS_ALLOW_PLAINTEXT=true"),
    (
        "tls-key-without-cert",
        ["--tls-key-file", "/nonexistent/key.pem"],
        {},
        "--tls-cert-file and --tls-key-file",
    ),
    (
        "missing-tls-file",
        [],
        {
            "PPOS_TLS_CERT_FILE": "/nonexistent/cert.pem",
            "PPOS_TLS_KEY_FILE": "/nonexistent/key.pem",
            "PPOS_TLS_CA_FILE": "/nonexistent/ca.pem",
        },
        "--tls-cert-file: /nonexistent/cert.pem is not a readable file",
    ),
]


@pytest.mark.parametrize(
    ("case", "args", "env", "message"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS]
)
def test_bad_configuration_exits_with_a_clear_message(
    tmp_path: Path,
    canary_token: str,
    case: str,
    args: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    base = {
        "PPOS_CONTROL_TOKEN": canary_token,
        "PPOS_DATA_DIR": str(tmp_path / "data"),
        "PPOS_LISTEN": "127.0.0.1:0",
        "PPOS_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
    }
    result = run_cli("serve", *args, env={**base, **env})
    assert result.returncode == EXIT_CONFIG, (result.stdout, result.stderr)
    assert "configuration error" in result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert canary_token not in result.stderr + result.stdout


def test_token_is_never_accepted_on_the_command_line(tmp_path: Path) -> None:
    result = run_cli("serve", "--control-token", "x" * 40)
    assert result.returncode != 0
    assert "unrecognized arguments" in result.stderr


def test_token_generate_writes_a_private_file(tmp_path: Path) -> None:
    out = tmp_path / "secrets" / "token"
    first = run_cli("token", "generate", "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    token = out.read_text().strip()
    assert len(token) >= 32
    assert token not in first.stdout + first.stderr
    again = run_cli("token", "generate", "--out", str(out))
    assert again.returncode == EXIT_CONFIG
    assert out.read_text().strip() == token, "an existing token must never be overwritten"


@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_an_unreachable_database_is_one_line_and_exit_2(
    tmp_path: Path, canary_token: str, command: str
) -> None:
    result = run_cli(
        command,
        env={
            "PPOS_CONTROL_TOKEN": canary_token,
            "PPOS_DATA_DIR": str(tmp_path / "data"),
            "PPOS_LISTEN": "127.0.0.1:0",
            "PPOS_MIGRATE_ON_START": "true",
            # Port 1 on loopback: nothing listens, the connection is refused at once.
            "PPOS_DATABASE_URL": "postgresql+psycopg://ops:hunter2-secret@127.0.0.1:1/ppos",
        },
    )
    assert result.returncode == EXIT_CONFIG, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines == [lines[0]], result.stderr
    assert lines[0].startswith("ppos-control-plane: cannot start: cannot reach the database")
    assert "127.0.0.1:1/ppos" in lines[0]
    assert "Connection refused" in lines[0]
    assert "hunter2-secret" not in result.stderr + result.stdout
    assert canary_token not in result.stderr + result.stdout


def test_a_taken_port_is_refused_with_exit_2(tmp_path: Path, canary_token: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_cli(
            "serve",
            env={
                "PPOS_CONTROL_TOKEN": canary_token,
                "PPOS_DATA_DIR": str(tmp_path / "data"),
                "PPOS_LISTEN": f"127.0.0.1:{port}",
                "PPOS_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
            },
        )
    assert result.returncode == EXIT_CONFIG, (result.stdout, result.stderr)
    assert f"cannot start: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_files_are_private_whichever_command_creates_them(
    tmp_path: Path, canary_token: str
) -> None:
    data = tmp_path / "fresh" / "data"
    token = tmp_path / "secrets" / "token"
    assert run_cli("token", "generate", "--out", str(token)).returncode == 0
    result = run_cli(
        "migrate",
        env={"PPOS_CONTROL_TOKEN_FILE": str(token), "PPOS_DATA_DIR": str(data)},
    )
    assert result.returncode == 0, result.stderr
    modes = {
        path.name: path.stat().st_mode & 0o777
        for path in (token.parent, token, data, data / "control-plane.db")
    }
    assert modes == {"secrets": 0o700, "token": 0o600, "data": 0o700, "control-plane.db": 0o600}
    for sidecar in data.glob("control-plane.db-*"):  # SQLite's -wal and -shm
        assert sidecar.stat().st_mode & 0o077 == 0, sidecar
