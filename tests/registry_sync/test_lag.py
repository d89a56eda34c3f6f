"""Sync lag is the age of the oldest change not yet synced: 0 when caught up,
in the RPC and the metrics; the metrics exist from start-up, set from the
stored status before any sweep runs."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest

from ppos.controlplane.core.logging import SecretRegistry
from ppos.controlplane.core.metrics import SYNC_LAG_CHANGES, SYNC_LAG_SECONDS
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as pb
from ppos.controlplane.services.registry_sync.lag import lag_seconds
from tests.ops.test_observability import metrics
from tests.registry_sync.conftest import WorldFactory
from tests.registry_sync.harness import SyncWorld, start_sync_plane, write_faults
from tests.support.polling import eventually
from tests.support.servers import RunningPlane, stop_plane

REGION = "eu-west-1"
RECORDS = 100
METRICS = {"PPOS_METRICS_LISTEN": "127.0.0.1:0"}
SLOW_PAGES = {
    **METRICS,
    "PPOS_SYNC_PAGE_RECORDS": "10",
    "PPOS_SYNC_RETRY_ATTEMPTS": "2",
    "PPOS_SYNC_REGION_RECORDS_PER_SECOND": "150",
    "PPOS_SYNC_BURST": "100ms",
}


def test_lag_is_zero_when_caught_up_and_unknown_without_a_time() -> None:
    assert lag_seconds(0, None, 1000.0) == 0.0
    assert lag_seconds(0, 10 * 10**9, 1000.0) == 0.0  # however old the newest change
    assert lag_seconds(5, 400 * 10**9, 1000.0) == 600.0
    assert lag_seconds(5, None, 1000.0) is None


def sample(samples: dict, name: str) -> float | None:  # type: ignore[type-arg]
    return samples.get((name, (("region", REGION),)))


async def stopped_midway(w: SyncWorld, faults: Path) -> tuple[pb.RegionSyncStatus, float]:
    """A sweep that fails after some pages; the status then, and the newest synced time."""
    started = await w.start_sweep()
    await w.wait_status(REGION, lambda s: s.pages_committed >= 2)
    write_faults(faults, {"unavailable": 1000})
    failed = await w.wait_sweep(started.sweep_id)
    assert failed.state == pb.SWEEP_STATE_FAILED
    held = await w.all_jobs(REGION, omit_payload=True)
    newest = max(job.record.update_time.ToNanoseconds() for job in held) / 1e9
    status = await w.status(REGION)
    assert status.lag_changes == RECORDS - len(held) > 0
    return status, newest


async def test_lag_while_behind_then_zero_once_caught_up(
    world: WorldFactory, tmp_path: Path
) -> None:
    faults = tmp_path / "faults.json"
    write_faults(faults, {})
    w = await world(
        {REGION: {"synthetic": RECORDS, "extra": ["--faults", str(faults)]}}, env=SLOW_PAGES
    )
    before = time.time()
    status, newest = await stopped_midway(w, faults)
    after = time.time()
    # Every remaining change follows the newest synced one: its age is the lag.
    age = status.lag.ToNanoseconds() / 1e9
    assert before - newest <= age <= after - newest
    scraped = await metrics(w.plane)
    assert sample(scraped, "ppos_sync_lag_changes") == status.lag_changes
    assert (sample(scraped, "ppos_sync_lag_seconds") or 0.0) >= age

    write_faults(faults, {})
    assert (await w.sweep()).state == pb.SWEEP_STATE_SUCCEEDED
    caught_up = await w.status(REGION)
    assert caught_up.lag_changes == 0
    assert caught_up.HasField("lag")
    assert caught_up.lag.ToNanoseconds() == 0
    scraped = await metrics(w.plane)
    assert sample(scraped, "ppos_sync_lag_changes") == 0
    assert sample(scraped, "ppos_sync_lag_seconds") == 0


async def test_lag_metrics_exist_from_start_up(
    world: WorldFactory,
    tmp_path: Path,
    database_url: str,
    data_dir: Path,
    canary_token: str,
    secret_registry: SecretRegistry,
) -> None:
    faults = tmp_path / "faults.json"
    write_faults(faults, {})
    w = await world(
        {REGION: {"synthetic": RECORDS, "extra": ["--faults", str(faults)]}}, env=SLOW_PAGES
    )
    status, newest = await stopped_midway(w, faults)
    # A new process starts without the region's series (the registry is per process).
    _forget_region_series()

    restarted: RunningPlane = await start_sync_plane(
        token=canary_token,
        database_url=database_url,
        data_dir=data_dir,
        secrets=secret_registry,
        regions={REGION: w.sims[REGION].port},
        extra_env=METRICS,
    )
    try:
        before = time.time()
        # Published before the scheduler's first leader check: no sweep has run here.
        scraped = await eventually(
            lambda: metrics(restarted), lambda m: sample(m, "ppos_sync_lag_changes") is not None
        )
        after = time.time()
        assert sample(scraped, "ppos_sync_lag_changes") == status.lag_changes
        seconds = sample(scraped, "ppos_sync_lag_seconds")
        assert seconds is not None
        assert before - newest <= seconds <= after - newest
    finally:
        await stop_plane(restarted)


def _forget_region_series() -> None:
    for gauge in (SYNC_LAG_CHANGES, SYNC_LAG_SECONDS):
        with contextlib.suppress(KeyError):  # not created yet in this process
            gauge.remove(REGION)


@pytest.fixture(autouse=True)
def _without_region_series() -> None:
    """Tests here assert on the region's series: each starts without it."""
    _forget_region_series()
