"""The Dockerfile, the compose file and the Kubernetes manifests: schema-valid, and
saying what the design requires (non-root, gRPC health, secrets by reference only,
each service in its own container with its peers wired)."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "compose.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
MANIFESTS = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
COMPOSE_BIN = ROOT / ".venv-compose" / "bin" / "docker-compose"
K8S_VERSIONS = ["1.30.0", "1.37.0"]
SERVICES = {
    "governance": "ppos.controlplane.governance.v1.GovernanceService",
    "noderegistry": "ppos.controlplane.noderegistry.v1.NodeRegistryService",
    "registrysync": "ppos.controlplane.registrysync.v1.RegistrySyncService",
}
PEER_ENV = {
    "PPOS_PEER_GOVERNANCE": "governance",
    "PPOS_PEER_NODEREGISTRY": "noderegistry",
    "PPOS_PEER_REGISTRYSYNC": "registrysync",
}


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in MANIFESTS:
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in manifests() if d["kind"] == kind]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_pass_strict_schema_validation(version: str) -> None:
    assert len(manifests()) >= 12
    for doc in manifests():
        kubernetes_validate.validate(doc, version, strict=True)  # raises on any mistake


def test_schema_validation_catches_mistakes() -> None:
    deployment = by_kind("Deployment")[0]
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.30.0", strict=True)


def test_each_service_deployment_is_hardened_and_probed_by_grpc_health() -> None:
    deployments = {d["metadata"]["name"]: d for d in by_kind("Deployment")}
    services = {d["metadata"]["name"]: d for d in by_kind("Service")}
    assert set(deployments) == {f"ppos-{name}" for name in SERVICES}
    for name, full in SERVICES.items():
        pod = deployments[f"ppos-{name}"]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        (container,) = pod["containers"]
        assert container["args"] == ["serve", "--service", name]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        # gRPC health over the pod's mutual TLS (the kubelet's grpc probe has no TLS)
        probe = container["readinessProbe"]["exec"]["command"]
        assert probe[:2] == ["pposctl", "health"]
        assert probe[-1] == full
        assert "tcpSocket" in container["livenessProbe"]  # a DB outage unreadies, never kills
        env = {e["name"]: e for e in container.get("env", [])}
        assert env["PPOS_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": "ppos-database",
            "key": f"{name}-url",  # its own login, never the owner's
        }
        assert "PPOS_CONTROL_TOKEN" not in env  # only ever a file from a Secret
        secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        assert secrets == {"ppos-control-token", "ppos-signing-key", "ppos-tls"}
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/run/secrets/ppos/tls" in mounts
        assert services[f"ppos-{name}"]["spec"]["selector"] == {
            "app.kubernetes.io/name": f"ppos-{name}"
        }


def test_migrations_run_as_the_owner_and_set_up_each_services_login() -> None:
    """Two kinds of credential: the owner's, for the migrate Job alone, and one
    login per service, which the Job creates and grants from the same Secret keys."""
    (job,) = by_kind("Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert env["PPOS_DATABASE_URL"] == {"name": "ppos-database-owner", "key": "url"}
    for name in SERVICES:
        assert env[f"PPOS_{name.upper()}_DATABASE_URL"] == {
            "name": "ppos-database",
            "key": f"{name}-url",
        }
    for deployment in by_kind("Deployment"):
        for pod_container in deployment["spec"]["template"]["spec"]["containers"]:
            refs = [e["valueFrom"] for e in pod_container.get("env", []) if "valueFrom" in e]
            assert all(r["secretKeyRef"]["name"] != "ppos-database-owner" for r in refs)


def test_config_wires_peers_to_services_and_holds_no_secret() -> None:
    (config,) = by_kind("ConfigMap")
    data = config["data"]
    services = {d["metadata"]["name"] for d in by_kind("Service")}
    headless = {
        d["metadata"]["name"] for d in by_kind("Service") if d["spec"].get("clusterIP") == "None"
    }
    for variable, name in PEER_ENV.items():
        # Peers balance over every pod: dns:/// a headless Service of the service.
        scheme, _, address = data[variable].partition("///")
        assert scheme == "dns:"
        host, _, port = address.rpartition(":")
        assert host.split(".")[0] == f"ppos-{name}-peers"
        assert host.split(".")[0] in services
        assert host.split(".")[0] in headless
        assert port == "50051"
    assert data["PPOS_MIGRATE_ON_START"] == "false"  # the migrate Job does it
    assert data["PPOS_CONTROL_TOKEN_FILE"].startswith("/run/secrets/")
    assert "PPOS_CONTROL_TOKEN" not in data
    for variable in ("CERT_FILE", "KEY_FILE", "CLIENT_CA_FILE", "CA_FILE"):  # mutual TLS
        assert data[f"PPOS_TLS_{variable}"].startswith("/run/secrets/ppos/tls/")
    assert "PPOS_ALLOW_PLAINTEXT" not in data
    assert not by_kind("Secret"), "secrets are created out of band, never committed"


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def test_compose_file_passes_docker_compose_config() -> None:
    assert COMPOSE_BIN.exists(), "docker-compose is missing: run `make setup`"
    result = subprocess.run(
        [str(COMPOSE_BIN), "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=COMPOSE.parent,
    )
    assert result.returncode == 0, result.stderr
    broken = COMPOSE.parent / "broken.compose.yaml"
    try:
        broken.write_text(COMPOSE.read_text().replace("depends_on:", "depends_onn:", 1))
        result = subprocess.run(
            [str(COMPOSE_BIN), "-f", str(broken), "config", "--quiet"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=COMPOSE.parent,
        )
        assert result.returncode != 0
        assert "depends_onn" in result.stderr
    finally:
        broken.unlink()


def test_compose_runs_each_service_alone_with_its_peers_wired() -> None:
    services = compose()["services"]
    assert {"postgres", "migrate", "preflight-sim", *SERVICES} <= set(services)
    for name in SERVICES:
        service = services[name]
        assert service["command"] == ["serve", "--service", name]
        env = service["environment"]
        for variable, peer in PEER_ENV.items():
            assert env[variable] == f"{peer}:50051"
            assert services[peer]["command"][-1] == peer
        assert "PPOS_CONTROL_TOKEN" not in env
        assert env["PPOS_CONTROL_TOKEN_FILE"] == "/run/secrets/control_token"
        assert env["PPOS_TLS_CLIENT_CA_FILE"] == env["PPOS_TLS_CA_FILE"] == "/run/secrets/tls_ca"
        assert env["PPOS_TLS_CERT_FILE"] == "/run/secrets/plane_cert"
        assert "PPOS_ALLOW_PLAINTEXT" not in env
        assert env["PPOS_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["PPOS_MIGRATE_ON_START"] == "false"
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        region, _, target = env["PPOS_SYNC_REGIONS"].partition("=")
        assert target.split(":")[0] == "preflight-sim"
        assert region in services["preflight-sim"]["command"]
    assert services["migrate"]["command"] == ["migrate"]
    # The migrate job as the owner; each service as its own login, made by migrate.
    migrate_env = services["migrate"]["environment"]
    owner = make_url(migrate_env["PPOS_DATABASE_URL"]).username
    logins = set()
    for name in SERVICES:
        url = services[name]["environment"]["PPOS_DATABASE_URL"]
        assert migrate_env[f"PPOS_{name.upper()}_DATABASE_URL"] == url
        logins.add(make_url(url).username)
    assert owner not in logins
    assert len(logins) == len(SERVICES)
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    sim = services["preflight-sim"]
    assert sim["entrypoint"] == ["ppos-preflight-sim"]
    assert sim["healthcheck"]["test"][:3] == ["CMD", "pposctl", "health"]
    assert "--tls-client-ca-file" in sim["command"]  # the region asks for our certificate


def test_dockerfile_is_slim_non_root_with_a_grpc_healthcheck() -> None:
    text = DOCKERFILE.read_text()
    bases = re.findall(r"^FROM (\S+)", text, re.M)
    assert all("slim" in base for base in bases)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users
    assert users[-1].split(":")[0] not in ("0", "root")
    health = re.search(r"^HEALTHCHECK .*?CMD (\[.*?\])", text, re.M | re.S)
    assert health is not None
    assert '"pposctl", "health"' in health.group(1)
    entry = re.search(r'^ENTRYPOINT \["([^"]+)"\]', text, re.M)
    assert entry is not None
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entry.group(1) in scripts
    assert "pposctl" in scripts
    assert "ppos-preflight-sim" in scripts
    ignore = (ROOT / "docker" / "Dockerfile.dockerignore").read_text()
    assert ignore.splitlines()[1] == "*"  # nothing but what the image is built from
