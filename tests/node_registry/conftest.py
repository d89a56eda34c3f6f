"""Fixtures of the node registry tests: planes with chosen settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from ppos.controlplane.core.logging import SecretRegistry
from tests.support.canary import scan_files
from tests.support.servers import RunningPlane, start_plane, stop_plane

PlaneFactory = Callable[..., Awaitable[RunningPlane]]


@pytest.fixture
async def make_plane(
    database_url: str, tmp_path: Path, canary_token: str, secret_registry: SecretRegistry
) -> AsyncIterator[PlaneFactory]:
    """Start planes on the test's database with extra settings (all share one data dir,
    hence one key ring, like replicas sharing their keys)."""
    running: list[RunningPlane] = []

    async def factory(**env: str) -> RunningPlane:
        plane = await start_plane(
            token=canary_token,
            database_url=database_url,
            data_dir=tmp_path / "data",
            secrets=secret_registry,
            extra_env=env,
        )
        running.append(plane)
        return plane

    try:
        yield factory
    finally:
        for plane in reversed(running):
            await stop_plane(plane)
    assert scan_files(tmp_path, canary_token) == [], "canary token written to a file"
