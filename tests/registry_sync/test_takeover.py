"""The sync scheduler's lead passes between real plane processes on PostgreSQL:
within 2 s of a clean stop (SIGTERM), 5 s of a SIGKILL and 10 s of a SIGSTOP,
each takeover with a new generation. SQLite deployments are one process (its
flock passes on a process's death too; tests/storage/test_leadership.py)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.governance.processes import PlaneProcess, start_plane_process
from tests.support.servers import plane_env

LEASE = "sync-leader"
BOUNDS = {signal.SIGTERM: 2.0, signal.SIGKILL: 5.0, signal.SIGSTOP: 10.0}

pytestmark = pytest.mark.slow


def _lease(url: str) -> tuple[int, int] | None:
    """(generation, pid) of the sync's current lead."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            row = connection.execute(
                text("SELECT generation, holder FROM leader_leases WHERE name = :n"), {"n": LEASE}
            ).one_or_none()
    finally:
        engine.dispose()
    if row is None:
        return None
    return int(row[0]), int(str(row[1]).rsplit(":", 1)[1])


async def _lead_change(url: str, after: int, limit: float) -> tuple[int, int]:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        lease = await asyncio.to_thread(_lease, url)
        if lease is not None and lease[0] > after:
            return lease
        await asyncio.sleep(0.05)
    raise AssertionError(f"no new lead within {limit} s")


async def test_the_sync_lead_passes_on_within_its_bounds(
    database_url: str, backend: str, tmp_path: Path, canary_token: str
) -> None:
    if backend != "postgresql":
        pytest.skip("one process per SQLite database: nothing to take over")
    env = plane_env(token=canary_token, database_url=database_url, data_dir=tmp_path / "data")
    env["PPOS_SERVICES"] = "registrysync"

    async def start(index: int) -> PlaneProcess:
        return await start_plane_process(env, tmp_path / f"plane-{index}.log")

    planes = {}
    for index in range(2):
        plane = await start(index)
        planes[plane.process.pid] = plane
    taken: dict[str, float] = {}
    try:
        generation, leader = await _lead_change(database_url, 0, 30)
        for number, sig in enumerate(BOUNDS, start=2):
            assert leader in planes
            planes[leader].process.send_signal(sig)
            signalled = time.monotonic()
            generation, successor = await _lead_change(database_url, generation, 30)
            taken[sig.name] = time.monotonic() - signalled
            assert successor != leader
            assert successor in planes
            stale = planes.pop(leader)
            if sig == signal.SIGSTOP:
                stale.process.send_signal(signal.SIGCONT)  # wakes up replaced: it steps down
                await asyncio.sleep(2)
                assert (await asyncio.to_thread(_lease, database_url)) == (generation, successor)
            await (stale.kill() if sig != signal.SIGTERM else stale.stop())
            leader = successor
            replacement = await start(number)
            planes[replacement.process.pid] = replacement
        print("takeover seconds:", {k: round(v, 2) for k, v in taken.items()})
        for sig, bound in BOUNDS.items():
            assert taken[sig.name] <= bound, f"{sig.name}: {taken[sig.name]:.2f} s > {bound} s"
    finally:
        for plane in planes.values():
            with contextlib.suppress(ProcessLookupError):
                plane.process.send_signal(signal.SIGCONT)
            await plane.stop()
