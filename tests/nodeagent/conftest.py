"""Fixtures of the node agent tests: a real plane with short node-health settings on
a fixed loopback port (so it can be restarted under a running agent)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ppos.controlplane.core.logging import SecretRegistry
from tests.support.servers import RunningPlane, start_plane, stop_plane

# Heartbeat every 0.5 s; READY turns NOT_READY after 2 s without one, LOST 2 s later.
SHORT_HEALTH = {
    "PPOS_HEARTBEAT_INTERVAL": "500ms",
    "PPOS_HEARTBEAT_TTL": "2s",
    "PPOS_LOST_GRACE": "2s",
    "PPOS_NODE_SWEEP_INTERVAL": "500ms",
    "PPOS_NODE_SWEEP_START_DELAY": "0s",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PlaneHandle:
    """A plane that can be stopped and started again on the same port and database."""

    def __init__(
        self, token: str, database_url: str, data_dir: Path, secrets: SecretRegistry
    ) -> None:
        self.token = token
        self.database_url = database_url
        self.data_dir = data_dir
        self.secrets = secrets
        self.address = f"127.0.0.1:{free_port()}"
        self.plane: RunningPlane | None = None

    async def start(self) -> RunningPlane:
        self.plane = await start_plane(
            token=self.token,
            database_url=self.database_url,
            data_dir=self.data_dir,
            secrets=self.secrets,
            extra_env={**SHORT_HEALTH, "PPOS_LISTEN": self.address},
        )
        return self.plane

    async def stop(self) -> None:
        if self.plane is not None:
            await stop_plane(self.plane)
            self.plane = None


@pytest.fixture
async def agent_plane(
    database_url: str, tmp_path: Path, canary_token: str, secret_registry: SecretRegistry
) -> AsyncIterator[PlaneHandle]:
    handle = PlaneHandle(canary_token, database_url, tmp_path / "data", secret_registry)
    await handle.start()
    try:
        yield handle
    finally:
        await handle.stop()
