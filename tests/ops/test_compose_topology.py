"""The compose topology run for real, without Docker: every container of
docker/compose.yaml becomes a process with that container's command and
environment, host names and ports mapped to loopback. The services run apart on
PostgreSQL, find each other only through PPOS_PEER_*, every connection between
them, to the simulated region and from pposctl is mutual TLS (certificates from
an in-memory CA, laid out as scripts/dev-ca.sh writes them), and the
containers' health checks (the Dockerfile's and the simulator's) pass against
them."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.engine import make_url

from tests.ops.support import Result, pposctl_sync
from tests.support.processes import free_port
from tests.support.tls import write_chain

# compose runs on PostgreSQL, so this does too (the database_url fixture's PostgreSQL leg)
pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CONTAINER_PORTS = {
    "governance": 50051,
    "noderegistry": 50051,
    "registrysync": 50051,
    "preflight-sim": 7001,
}


@dataclass
class Container:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    ports: dict[int, int]  # container port -> loopback port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.ports[CONTAINER_PORTS[self.name]]}"


class Topology:
    """Maps compose host names and container ports onto loopback."""

    def __init__(self, compose: dict[str, Any], database_url: str, secrets: dict[str, Path]):
        self.compose = compose
        self.database_url = database_url
        self.secrets = secrets
        self.ports = {(name, port): free_port() for name, port in CONTAINER_PORTS.items()}
        self.ports.update({(name, 9464): free_port() for name in CONTAINER_PORTS})

    def rewrite(self, name: str, value: str) -> str:
        if value.startswith("postgresql+psycopg://"):
            return self.database_on_loopback(value)
        if value.startswith("/run/secrets/"):
            return str(self.secrets[value.rsplit("/", 1)[1]])

        def host_port(match: re.Match[str]) -> str:
            host, port = match.group(1), int(match.group(2))
            target = name if host in ("0.0.0.0", "127.0.0.1") else host  # noqa: S104
            if (target, port) not in self.ports:
                return match.group(0)
            return f"127.0.0.1:{self.ports[(target, port)]}"

        return re.sub(r"([A-Za-z0-9.-]+):(\d+)", host_port, value)

    def database_on_loopback(self, value: str) -> str:
        """The test's database for a compose URL: the owner's URL for the owner's
        (the migrate job), the same login and password for a service's."""
        given, ours = make_url(value), make_url(self.database_url)
        owner = make_url(str(self.compose["x-database"]["owner"])).username
        if given.username == owner:
            return self.database_url
        changed = ours.set(username=given.username, password=given.password)
        return changed.render_as_string(hide_password=False)

    def env(self, name: str, data_dir: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PPOS_")}
        for key, value in self.compose["services"][name].get("environment", {}).items():
            env[key] = self.rewrite(name, str(value))
        env["PPOS_DATA_DIR"] = str(data_dir)  # the image's default, a tmpfs there
        env["PPOS_LISTEN"] = self.rewrite(name, "0.0.0.0:50051")
        env["PPOS_LOG_FORMAT"] = "json"
        env["PPOS_HEALTH_PROBE_INTERVAL"] = "200ms"
        return env

    def argv(self, name: str) -> list[str]:
        service = self.compose["services"][name]
        entry = service.get("entrypoint", ["ppos-control-plane"])
        return [str(BIN / entry[0]), *[self.rewrite(name, a) for a in service["command"]]]


def write_secrets(directory: Path, token: str) -> dict[str, Path]:
    token_file = directory / "control_token"
    token_file.write_text(token + "\n")
    key_file = directory / "signing_key"
    key_file.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    for path in (token_file, key_file):
        path.chmod(0o600)
    return {"control_token": token_file, "signing_key": key_file, **write_tls(directory)}


def write_tls(directory: Path) -> dict[str, Path]:
    """The compose TLS secrets: one CA, the plane's, the simulator's and an
    operator's certificate, each valid for its compose host names and loopback."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    files = {"tls_ca": directory / "ca.pem"}
    for name, hosts in (
        ("plane", ("governance", "noderegistry", "registrysync")),
        ("sim", ("preflight-sim",)),
        ("operator", ("operator",)),
    ):
        cert = ca.issue_cert(*hosts, "localhost", "127.0.0.1")
        write_chain(cert, directory / f"{name}.pem")
        cert.private_key_pem.write_to_path(str(directory / f"{name}-key.pem"))
        files[f"{name}_cert"] = directory / f"{name}.pem"
        files[f"{name}_key"] = directory / f"{name}-key.pem"
    return files


def operator_tls(secrets: dict[str, Path]) -> dict[str, str]:
    """pposctl's mutual TLS settings on the host."""
    return {
        "PPOS_CA_FILE": str(secrets["tls_ca"]),
        "PPOS_CERT_FILE": str(secrets["operator_cert"]),
        "PPOS_KEY_FILE": str(secrets["operator_key"]),
    }


@pytest.fixture
def topology(
    database_url: str,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    canary_token: str,
) -> Iterator[tuple[Topology, dict[str, Container]]]:
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    secrets = write_secrets(tmp_path_factory.mktemp("secrets"), canary_token)
    topo = Topology(compose, database_url, secrets)
    migrate = subprocess.run(
        topo.argv("migrate"),
        env=topo.env("migrate", tmp_path / "migrate"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrate.returncode == 0, migrate.stderr
    containers: dict[str, Container] = {}
    try:
        for name in ("governance", "noderegistry", "registrysync", "preflight-sim"):
            log = tmp_path / f"{name}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    topo.argv(name),
                    env=topo.env(name, tmp_path / name),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            ports = {port: loop for (owner, port), loop in topo.ports.items() if owner == name}
            containers[name] = Container(name, process, log, ports)
            if name == "governance":  # the simulator fetches the JWKS from it
                wait_healthy(containers[name], secrets)
        for container in containers.values():
            wait_healthy(container, secrets)
        yield topo, containers
    finally:
        for container in containers.values():
            if container.process.poll() is None:
                container.process.terminate()
        for container in containers.values():
            try:
                container.process.wait(15)
            except subprocess.TimeoutExpired:
                container.process.kill()
            assert canary_token not in container.log.read_text(errors="replace")


def wait_healthy(container: Container, secrets: dict[str, Path]) -> None:
    """Run the container's health check until it passes (as Docker would)."""
    env = {"PPOS_ADDRESS": container.address, **operator_tls(secrets)}
    for _attempt in range(150):
        if container.process.poll() is not None:
            raise AssertionError(f"{container.name} exited:\n{container.log.read_text()}")
        result = pposctl_sync(["health", "--quiet", "--timeout", "1s"], env)
        if result.code == 0:
            return
        subprocess.run(["sleep", "0.1"], check=True)
    raise AssertionError(f"{container.name} never healthy:\n{container.log.read_text()}")


def split_env(containers: dict[str, Container], secrets: dict[str, Path]) -> dict[str, str]:
    """An operator's shell for the split deployment (as docs/operator-guide.md says)."""
    return {
        "PPOS_ADDRESS": containers["governance"].address,
        "PPOS_NODEREGISTRY_ADDRESS": containers["noderegistry"].address,
        "PPOS_REGISTRYSYNC_ADDRESS": containers["registrysync"].address,
        "PPOS_CONTROL_TOKEN_FILE": str(secrets["control_token"]),
        **operator_tls(secrets),
    }


async def cli(env: dict[str, str], *argv: str) -> Result:
    return await asyncio.to_thread(pposctl_sync, list(argv), env)


async def test_every_container_is_healthy_and_hosts_only_its_service(
    topology: tuple[Topology, dict[str, Container]],
) -> None:
    topo, containers = topology
    for name, full in (
        ("governance", "ppos.controlplane.governance.v1.GovernanceService"),
        ("noderegistry", "ppos.controlplane.noderegistry.v1.NodeRegistryService"),
        ("registrysync", "ppos.controlplane.registrysync.v1.RegistrySyncService"),
    ):
        env = {"PPOS_ADDRESS": containers[name].address, **operator_tls(topo.secrets)}
        mine = await cli(env, "health", "-q", full)
        assert mine.code == 0, (name, mine.stderr)
        others = await cli(env, "-o", "json", "health")
        statuses = {s["service"]: s["status"] for s in others.json()["services"]}
        assert statuses[full] == "SERVING"
        assert sum(status == "NOT_HOSTED" for status in statuses.values()) == 2
        plaintext = await cli({"PPOS_ADDRESS": containers[name].address}, "health", "-q")
        assert plaintext.code == 3  # no certificate, no connection
    # the simulator's compose health check, as written there
    sim = topo.compose["services"]["preflight-sim"]["healthcheck"]["test"][1:]
    result = await cli({}, *[topo.rewrite("preflight-sim", a) for a in sim[1:]])
    assert result.code == 0, result.stderr


async def test_pposctl_drives_the_split_services(
    topology: tuple[Topology, dict[str, Container]],
) -> None:
    topo, containers = topology
    env = split_env(containers, topo.secrets)
    created = await cli(env, "-o", "json", "enrollments", "create", "--region", "eu-west-1")
    assert created.code == 0, created.stderr
    assert created.json()["enrollmentToken"].startswith("ppos_enroll_")
    missing = await cli(env, "nodes", "get", "node_nosuch")
    assert missing.code == 6  # answered by the node registry container
    view = await cli(env, "config", "view")
    assert containers["noderegistry"].address in view.stdout
    # a call routed to a container that does not host the service is UNIMPLEMENTED (12)
    wrong = {**env, "PPOS_NODEREGISTRY_ADDRESS": containers["governance"].address}
    misrouted = await cli(wrong, "nodes", "get", "node_nosuch")
    assert misrouted.code == 12
    # the registry sync container pulls from the simulated region's container: the
    # simulator trusts it only through the JWKS it fetched from the governance one
    # (the scheduler may have swept first: either way every record is in after this)
    swept = await cli(env, "sync", "sweep", "start", "eu-west-1", "--poll", "100ms")
    assert swept.code == 0, swept.stderr
    assert swept.stdout.strip().endswith("succeeded")
    status = await cli(env, "-o", "json", "sync", "status", "eu-west-1")
    assert status.json()["recordsSynced"] == "500"
    assert "lastError" not in status.json()
    # each container exposes its own metrics
    for container in containers.values():
        if container.name == "preflight-sim":
            continue
        port = container.ports[9464]
        body = await asyncio.to_thread(_fetch, f"http://127.0.0.1:{port}/metrics")
        assert "ppos_rpc_requests_total" in body


def _fetch(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as reply:  # noqa: S310 - loopback
        return str(reply.read().decode())
