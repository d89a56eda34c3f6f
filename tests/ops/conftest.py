"""Fixtures of the operator-tool tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ppos.controlplane.core.logging import SecretRegistry
from tests.support.servers import RunningPlane, scanned_plane

OPS_ENV = {"PPOS_METRICS_LISTEN": "127.0.0.1:0", "PPOS_HEALTH_PROBE_INTERVAL": "100ms"}


@pytest.fixture
async def ops_plane(
    database_url: str, tmp_path: Path, canary_token: str, secret_registry: SecretRegistry
) -> AsyncIterator[RunningPlane]:
    """The whole plane with its metrics endpoint on and a fast health probe."""
    async with scanned_plane(
        token=canary_token,
        database_url=database_url,
        tmp_path=tmp_path,
        secrets=secret_registry,
        extra_env=OPS_ENV,
    ) as running:
        yield running
