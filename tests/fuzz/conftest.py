"""A plane for fuzzing: the `plane` fixture's, with a gateway configured for the
fuzz world's region (unreachable: deliveries fail and are retried in the
background, which is fine for what is checked here)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ppos.controlplane.core.logging import SecretRegistry
from tests.fuzz.campaign import FUZZ_ENV
from tests.support.servers import RunningPlane, scanned_plane


@pytest.fixture
async def fuzz_plane(
    database_url: str, tmp_path: Path, canary_token: str, secret_registry: SecretRegistry
) -> AsyncIterator[RunningPlane]:
    async with scanned_plane(
        token=canary_token,
        database_url=database_url,
        tmp_path=tmp_path,
        secrets=secret_registry,
        extra_env=FUZZ_ENV,
    ) as running:
        yield running
