"""A plane for fuzzing: the `plane` fixture's, with a gateway configured for the
fuzz world's region (unreachable: deliveries fail and are retried in the
background, which is fine for what is checked here)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ppos.controlplane.core.logging import SecretRegistry
from tests.fuzz.campaign import FUZZ_ENV
from tests.support.canary import scan_files
from tests.support.servers import RunningPlane, start_plane, stop_plane


@pytest.fixture
async def fuzz_plane(
    database_url: str, tmp_path: Path, canary_token: str, secret_registry: SecretRegistry
) -> AsyncIterator[RunningPlane]:
    running = await start_plane(
        token=canary_token,
        database_url=database_url,
        data_dir=tmp_path / "data",
        secrets=secret_registry,
        extra_env=FUZZ_ENV,
    )
    try:
        yield running
    finally:
        await stop_plane(running)
    assert scan_files(tmp_path, canary_token) == [], "canary token written to a file"
