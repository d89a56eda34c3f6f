"""Several replicas on one database: one leads and sweeps; another takes over when it goes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from ppos.controlplane.core.logging import SecretRegistry
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as pb
from ppos.controlplane.services.registry_sync.models import SweepRow
from ppos.controlplane.services.registry_sync.service import RegistrySyncModule
from ppos.preflightsim.cli import RunningSimulator
from tests.registry_sync.harness import SyncWorld, start_simulator, start_sync_plane
from tests.support.servers import RunningPlane, stop_plane

REGION = "eu-west-1"
ENV = {
    "PPOS_SYNC_PAGE_RECORDS": "10",
    "PPOS_SYNC_REGION_RECORDS_PER_SECOND": "200",
    "PPOS_SYNC_BURST": "100ms",
}


def scheduler_of(plane: RunningPlane) -> object:
    for module in plane.server.modules:
        if isinstance(module, RegistrySyncModule):
            return module.scheduler
    raise AssertionError("registrysync is not hosted")


def leading(plane: RunningPlane) -> bool:
    return bool(scheduler_of(plane).leading)  # type: ignore[attr-defined]


async def until(condition, limit: float = 30) -> None:  # type: ignore[no-untyped-def]
    """Wait for a condition (the limit only stops a hung test; it asserts nothing)."""
    async with asyncio.timeout(limit):
        while not condition():  # noqa: ASYNC110 - polls another object's state
            await asyncio.sleep(0.02)


@pytest.fixture
async def replicas(
    database_url: str,
    data_dir: Path,
    jwks: Path,
    canary_token: str,
    secret_registry: SecretRegistry,
) -> AsyncIterator[tuple[RunningSimulator, list[RunningPlane]]]:
    sim = await start_simulator(REGION, jwks, synthetic=200, synthetic_size=400)
    planes = [
        await start_sync_plane(
            token=canary_token,
            database_url=database_url,
            data_dir=data_dir,
            secrets=secret_registry,
            regions={REGION: sim.port},
            extra_env=ENV,
        )
        for _ in range(2)
    ]
    yield sim, planes
    for plane in planes:
        await stop_plane(plane)
    await sim.stop(0)


async def test_one_replica_leads_and_another_takes_over(
    replicas: tuple[RunningSimulator, list[RunningPlane]], database_url: str
) -> None:
    sim, planes = replicas
    await until(lambda: any(leading(p) for p in planes))
    leader = next(p for p in planes if leading(p))
    follower = next(p for p in planes if p is not leader)
    assert not leading(follower)

    # A sweep asked of the follower is run by the leader.
    via_follower = SyncWorld(follower, {REGION: sim})
    started = await via_follower.start_sweep()
    await via_follower.wait_status(REGION, lambda s: s.pages_committed >= 3)
    assert not leading(follower)

    # The leader stops mid-sweep: its sweep goes back to pending and the follower resumes it.
    await leader.server.stop(grace=1)
    await until(lambda: leading(follower))
    done = await via_follower.wait_sweep(started.sweep_id)
    assert done.state == pb.SWEEP_STATE_SUCCEEDED
    jobs = await via_follower.all_jobs(REGION, omit_payload=True)
    keys = [(j.record.job_id, j.record.revision) for j in jobs]
    assert len(keys) == len(set(keys)) == 200
    status = await via_follower.status(REGION)
    assert status.cursor == sim.registry.feed.head_cursor
    assert status.records_synced == 200
    assert not status.sweeping
    # The sweep's own counters add up across both leaders, and it was resumed once.
    assert done.records_synced == 200
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            resumed = connection.scalar(
                select(SweepRow.resumed).where(SweepRow.sweep_id == started.sweep_id)
            )
    finally:
        engine.dispose()
    assert resumed == 1
