"""Fixtures of the operator-tool tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ppos.controlplane.core.logging import SecretRegistry
from tests.support.canary import scan_files
from tests.support.servers import RunningPlane, start_plane, stop_plane

OPS_ENV = {"PPOS_METRICS_LISTEN": "127.0.0.1:0", "PPOS_HEALTH_PROBE_INTERVAL": "100ms"}


@pytest.fixture
async def ops_plane(
    database_url: str, tmp_path: Path, canary_token: str, secret_registry: SecretRegistry
) -> AsyncIterator[RunningPlane]:
    """The whole plane with its metrics endpoint on and a fast health probe."""
    running = await start_plane(
        token=canary_token,
        database_url=database_url,
        data_dir=tmp_path / "data",
        secrets=secret_registry,
        extra_env=OPS_ENV,
    )
    try:
        yield running
    finally:
        await stop_plane(running)
    assert scan_files(tmp_path, canary_token) == [], "canary token written to a file"
