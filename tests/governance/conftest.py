"""Fixtures of the governance tests: the control plane with simulated regional gateways."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ppos.controlplane.core.logging import SecretRegistry
from ppos.controlplane.security.keys import KeyRing
from ppos.preflightsim.jwks import RefreshingJwks
from ppos.preflightsim.preflight_jwt import PreflightJwtVerifier
from tests.governance.support import GatewayServer, Operator, start_gateway
from tests.support.canary import scan_files, scan_text
from tests.support.servers import RunningPlane, start_plane, stop_plane

REGIONS = ("eu-west-1", "us-east-1")

# Fast timings so tests wait milliseconds, not seconds.
FAST = {
    "PPOS_OUTBOX_POLL_INTERVAL": "50ms",
    "PPOS_OUTBOX_BACKOFF_BASE": "50ms",
    "PPOS_OUTBOX_BACKOFF_MAX": "400ms",
    "PPOS_OUTBOX_LEASE": "6s",
    "PPOS_OUTBOX_CALL_TIMEOUT": "3s",
    "PPOS_RECONCILER_INTERVAL": "100ms",
    "PPOS_ADMIN_JOB_POLL_INTERVAL": "50ms",
    "PPOS_ADMIN_JOB_LEASE": "3s",
    "PPOS_GOVERNANCE_WATCH_POLL": "50ms",
    "PPOS_AUDIT_GAP_GRACE": "500ms",
}


@dataclass
class Governed:
    """A running control plane, its simulated gateways and an operator client."""

    plane: RunningPlane
    gateways: dict[str, GatewayServer]
    operator: Operator
    verifier: PreflightJwtVerifier
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def runtime(self) -> Any:
        return self.plane.runtime

    @property
    def module(self) -> Any:
        return next(m for m in self.plane.server.modules if m.name == "governance")

    def gateway(self, region: str = REGIONS[0]) -> Any:
        return self.gateways[region].sim


def public_verifier(key_dir: Path) -> PreflightJwtVerifier:
    """What a receiver holds: the published public keys, nothing that can mint."""
    jwks = KeyRing.from_directory(key_dir).jwks()
    return PreflightJwtVerifier(RefreshingJwks(lambda: jwks), issuer="ppos-control-plane")


StartGoverned = Callable[..., Awaitable[Governed]]


@pytest.fixture
async def start_governed(
    database_url: str,
    tmp_path: Path,
    canary_token: str,
    secret_registry: SecretRegistry,
) -> AsyncIterator[StartGoverned]:
    """Start the plane with gateways for REGIONS (call once per test; stopped after it)."""
    started: list[Governed] = []

    async def start(
        env: dict[str, str] | None = None,
        gateway_argv: list[str] | None = None,
        regions: tuple[str, ...] = REGIONS,
    ) -> Governed:
        data_dir = tmp_path / "data"
        verifier = public_verifier(data_dir / "keys")
        gateways = {r: await start_gateway(r, verifier, gateway_argv) for r in regions}
        merged = {
            **FAST,
            "PPOS_GATEWAYS": ",".join(f"{r}={g.address}" for r, g in gateways.items()),
            **(env or {}),
        }
        plane = await start_plane(
            token=canary_token,
            database_url=database_url,
            data_dir=data_dir,
            secrets=secret_registry,
            extra_env=merged,
        )
        governed = Governed(plane, gateways, Operator(plane.channel, plane.operator), verifier)
        started.append(governed)
        return governed

    yield start
    for governed in started:
        await stop_plane(governed.plane)
        for gateway in governed.gateways.values():
            await gateway.stop()
            for call in gateway.sim.calls:
                text = repr(call.metadata) + repr(call.request)
                assert scan_text("gateway metadata", text, canary_token) == []
    assert scan_files(tmp_path, canary_token) == [], "canary token written to a file"


@pytest.fixture
async def gov(start_governed: StartGoverned) -> Governed:
    return await start_governed()
