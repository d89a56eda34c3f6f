"""A running demo for pposctl tests: the whole plane on one port syncing a simulated
region (its registry and its gateway, the shipped `ppos-preflight-sim`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ppos.controlplane.core.logging import SecretRegistry
from ppos.preflightsim import cli as sim_cli
from tests.ops.support import Result, pposctl
from tests.registry_sync.harness import FAST_SYNC_ENV, prepare_keys, start_simulator
from tests.support.canary import scan_files
from tests.support.servers import RunningPlane, start_plane, stop_plane

REGION = "eu-west-1"
ODD_RECORDS = 13  # revisions in odd.jsonl


@dataclass
class World:
    plane: RunningPlane
    sim: sim_cli.RunningSimulator

    async def ctl(self, *argv: str) -> Result:
        return await pposctl(self.plane, *argv)

    async def synced(self) -> None:
        result = await self.ctl("sync", "sweep", "start", REGION, "--poll", "50ms")
        assert result.code == 0, result.stderr


async def running_world(
    database_url: str,
    tmp_path: Path,
    token: str,
    secrets: SecretRegistry,
    *,
    sim_options: Mapping[str, object],
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[World]:
    """Start the simulated region and the plane that syncs it (and sends it commands)."""
    data_dir = tmp_path / "data"
    jwks = prepare_keys(data_dir)
    sim = await start_simulator(REGION, jwks, **sim_options)  # type: ignore[arg-type]
    merged = {
        **FAST_SYNC_ENV,
        "PPOS_SYNC_REGIONS": f"{REGION}=127.0.0.1:{sim.port}",
        "PPOS_GATEWAYS": f"{REGION}=127.0.0.1:{sim.port}",
        "PPOS_METRICS_LISTEN": "127.0.0.1:0",
        **(env or {}),
    }
    plane = await start_plane(
        token=token,
        database_url=database_url,
        data_dir=data_dir,
        secrets=secrets,
        extra_env=merged,
    )
    try:
        yield World(plane, sim)
    finally:
        await stop_plane(plane)
        await sim.stop(0)
    assert scan_files(tmp_path, token) == [], "canary token written to a file"
