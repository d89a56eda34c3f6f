"""Fixtures of the registry sync tests: simulated regions and a plane syncing them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from ppos.controlplane.core.logging import SecretRegistry
from ppos.preflightsim import samples
from tests.registry_sync.harness import (
    ODD_SAMPLES,
    SyncWorld,
    prepare_keys,
    start_simulator,
    start_sync_plane,
)
from tests.support.canary import scan_files
from tests.support.servers import stop_plane

WorldFactory = Callable[..., Awaitable[SyncWorld]]


@pytest.fixture(scope="session")
def realistic_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The deterministic realistic sample set (200 bytes to 2 MB), written once."""
    out = tmp_path_factory.mktemp("samples")
    return samples.write_jsonl(samples.realistic_set("eu-west-1"), out / "realistic.jsonl")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def jwks(data_dir: Path) -> Path:
    return prepare_keys(data_dir)


@pytest.fixture
async def world(
    database_url: str,
    data_dir: Path,
    jwks: Path,
    tmp_path: Path,
    canary_token: str,
    secret_registry: SecretRegistry,
) -> AsyncIterator[WorldFactory]:
    """`await world({"eu-west-1": dict(records=[...])}, env={...})`: sims + one plane."""
    made: list[SyncWorld] = []

    async def make(
        regions: dict[str, dict[str, Any]], *, env: dict[str, str] | None = None
    ) -> SyncWorld:
        sims = {}
        for region, options in regions.items():
            sims[region] = await start_simulator(region, jwks, **options)
        plane = await start_sync_plane(
            token=canary_token,
            database_url=database_url,
            data_dir=data_dir,
            secrets=secret_registry,
            regions={region: sim.port for region, sim in sims.items()},
            extra_env=env,
        )
        made.append(SyncWorld(plane, sims))
        return made[-1]

    yield make
    for item in made:
        await stop_plane(item.plane)
        for sim in item.sims.values():
            await sim.stop(0)
    assert scan_files(tmp_path, canary_token) == [], "canary token written to a file"


@pytest.fixture
def odd_and_realistic(realistic_file: Path) -> Sequence[Path]:
    return [ODD_SAMPLES, realistic_file]
