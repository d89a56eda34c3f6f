"""The whole picture for end-to-end tests: a control plane (all three services),
a simulated region (the shipped registry and gateway simulator) and real nodes.

The simulator runs on an address chosen before the plane starts, so the plane
can be configured with it; records are written once the test knows its node
ids (node ids are assigned at enrollment). The gateway's received calls and
every call's metadata are recorded by the simulator into JSON-lines files.
"""

from __future__ import annotations

import hashlib
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ppos.controlplane.security.keys import KeyRing
from ppos.preflightsim import cli as sim_cli
from tests.support.nodes import IMAGE

REGION = "eu-west-1"

# Fast timings: sweeps on request only; quick polls, retries and leases.
FAST = {
    "PPOS_SYNC_INTERVAL": "0",
    "PPOS_SYNC_POLL_INTERVAL": "50ms",
    "PPOS_SYNC_LEADER_RETRY": "200ms",
    "PPOS_SYNC_RETRY_BASE": "10ms",
    "PPOS_SYNC_RETRY_MAX": "100ms",
    "PPOS_SYNC_CALL_TIMEOUT": "5s",
    "PPOS_OUTBOX_POLL_INTERVAL": "50ms",
    "PPOS_OUTBOX_BACKOFF_BASE": "50ms",
    "PPOS_OUTBOX_BACKOFF_MAX": "400ms",
    "PPOS_OUTBOX_CALL_TIMEOUT": "5s",
    "PPOS_OUTBOX_LEASE": "6s",
    "PPOS_RECONCILER_INTERVAL": "100ms",
    "PPOS_ADMIN_JOB_POLL_INTERVAL": "50ms",
    "PPOS_GOVERNANCE_WATCH_POLL": "50ms",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def publish_keys(data_dir: Path) -> Path:
    """The plane's signing keys, made up front, and the JWKS the simulator trusts."""
    ring = KeyRing.from_directory(data_dir / "keys")
    path = data_dir / "jwks.json"
    ring.write_jwks(path)
    return path


def region_env(port: int) -> dict[str, str]:
    address = f"127.0.0.1:{port}"
    return {
        **FAST,
        "PPOS_SYNC_REGIONS": f"{REGION}={address}",
        "PPOS_GATEWAYS": f"{REGION}={address}",
    }


def record_line(
    job_id: str,
    state: str,
    node_id: str,
    *,
    revision: int = 1,
    payload: str = "",
    tenant: str = "acme-print",
    queue: str = "offset",
) -> tuple[str, bytes]:
    """One JSON line of the simulator's record format, and the payload's exact bytes."""
    body = payload or (
        '{"engine":"pdfToolbox","version":"15.1.2","exit":"crashed","pages":[],'
        '"bigInt":123456789012345678901234567890,"huge":1e400,"tenth":0.1,'
        '"unicode":"\\u00e9\\ud83d\\ude00","dup":1,"dup":2}'
    )
    status = "FAILED" if state == "FAILED_RUNTIME_ENVIRONMENT" else "COMPLETED"
    head = json.dumps(
        {
            "jobId": job_id,
            "tenantId": tenant,
            "queueId": queue,
            "revision": revision,
            "status": status,
            "governanceState": state,
            "nodeId": node_id,
            "containerImage": IMAGE,
            "createTime": "2026-11-28T10:00:00Z",
            "updateTime": f"2026-11-28T10:{revision:02d}:00Z",
        }
    )
    line = head[:-1] + ', "canonicalPayload": ' + body + "}"
    return line, body.encode()


def write_records(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


async def start_region(
    port: int, jwks: Path, records: Path, out: Path, extra: list[str] | None = None
) -> sim_cli.RunningSimulator:
    argv = [
        "--region",
        REGION,
        "--listen",
        f"127.0.0.1:{port}",
        "--jwks-file",
        str(jwks),
        "--records",
        str(records),
        "--gateway-record",
        str(out / "gateway.jsonl"),
        "--record-metadata",
        str(out / "metadata.jsonl"),
        *(extra or []),
    ]
    return await sim_cli.start(sim_cli.build_parser().parse_args(argv))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@dataclass
class Recorded:
    """What the simulated region received, read from its record files."""

    out: Path

    def gateway_calls(self, method: str | None = None) -> list[dict[str, Any]]:
        return [
            c for c in read_jsonl(self.out / "gateway.jsonl") if not method or c["method"] == method
        ]

    def applied(self, method: str) -> list[dict[str, Any]]:
        return [c for c in self.gateway_calls(method) if c["outcome"] == "applied"]

    def metadata(self) -> list[dict[str, Any]]:
        return read_jsonl(self.out / "metadata.jsonl")
