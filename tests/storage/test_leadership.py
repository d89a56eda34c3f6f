"""One leader among replicas: what every singleton loop relies on, on both databases."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
import sys
import time

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from ppos.controlplane.storage.leadership import (
    LEASE_TTL,
    SoleLeader,
    holder_name,
    leadership_for,
)
from ppos.controlplane.storage.leases import Fence, LeaderLeaseRow, LeadershipLost, database_now

# A replica in its own process that takes the lead and holds it until killed.
_LEAD_AND_HOLD = """
import asyncio, sys
from ppos.controlplane.storage.leadership import leadership_for

async def main():
    lead = leadership_for(sys.argv[1], "reconciler-test")
    print("leading" if await lead.acquire() else "following", flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


async def _verdict(stdout: asyncio.StreamReader) -> bytes:
    """The replica's "leading"/"following" line (its log lines share stdout)."""
    while True:
        line = await asyncio.wait_for(stdout.readline(), 60)
        if line in (b"leading\n", b"following\n", b""):
            return line


async def test_one_leader_at_a_time_and_a_successor_when_it_goes(database_url: str) -> None:
    first = leadership_for(database_url, "reconciler-test")
    second = leadership_for(database_url, "reconciler-test")
    other_loop = leadership_for(database_url, "another-loop")
    try:
        assert await first.acquire()
        assert not await second.acquire()
        assert await first.acquire(), "the leader keeps leading"
        assert await first.check()
        assert not await second.acquire()
        assert not await second.check()
        assert await other_loop.acquire(), "each loop has its own lead"
        await first.release()
        assert not await first.check()
        assert await second.acquire(), "released: the other replica takes over"
        assert not await first.acquire()
    finally:
        for lead in (first, second, other_loop):
            await lead.release()


async def test_a_dead_leaders_lock_passes_on(database_url: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _LEAD_AND_HOLD, database_url, stdout=asyncio.subprocess.PIPE
    )
    survivor = leadership_for(database_url, "reconciler-test")
    try:
        assert process.stdout is not None
        assert await _verdict(process.stdout) == b"leading\n"
        assert not await survivor.acquire()
        # The leader dies without a goodbye: the kernel closes its connection
        # (PostgreSQL frees the advisory lock) and its file (the flock goes).
        process.kill()
        await process.wait()
        led = False
        for _ in range(100):
            led = await survivor.acquire()
            if led:
                break
            await asyncio.sleep(0.1)
        assert led, "the dead leader's lock never passed on"
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await survivor.release()


async def test_an_in_memory_database_is_one_process_and_always_led() -> None:
    lead = leadership_for("sqlite://", "reconciler-test")
    assert isinstance(lead, SoleLeader)
    assert await lead.acquire()
    assert await lead.check()


def _check_fence(url: str, fence: Fence) -> None:
    engine = create_engine(url)
    try:
        with Session(engine) as session, session.begin():
            fence.check(session)
    finally:
        engine.dispose()


async def test_each_lead_has_a_new_generation_and_an_old_one_cannot_write(
    database_url: str,
) -> None:
    first = leadership_for(database_url, "fenced-loop")
    second = leadership_for(database_url, "fenced-loop")
    try:
        assert await first.acquire()
        old = first.fence()
        _check_fence(database_url, old)  # the current lead writes
        await first.release()
        assert await second.acquire()
        new = second.fence()
        assert new.generation == old.generation + 1
        _check_fence(database_url, new)
        with pytest.raises(LeadershipLost):
            _check_fence(database_url, old)  # the replaced lead may not
        assert first.fence().generation == 0, "no lead, no token"
    finally:
        await first.release()
        await second.release()


async def test_a_frozen_leader_loses_the_lead_when_its_lease_expires(
    database_url: str, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite deployments are one process: a frozen one holds its flock")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _LEAD_AND_HOLD, database_url, stdout=asyncio.subprocess.PIPE
    )
    survivor = leadership_for(database_url, "reconciler-test")
    try:
        assert process.stdout is not None
        assert await _verdict(process.stdout) == b"leading\n"
        frozen_generation = survivor.fence().generation + 1  # the first lead of this loop
        process.send_signal(signal.SIGSTOP)  # its connection stays open, its lock held
        frozen_at = time.monotonic()
        while not await survivor.acquire():
            assert time.monotonic() - frozen_at < 10, "the frozen leader kept the lead"
            await asyncio.sleep(0.2)
        took = time.monotonic() - frozen_at
        assert took >= LEASE_TTL - 1, "taken over before the lease expired"
        assert survivor.fence().generation == frozen_generation + 1
        with pytest.raises(LeadershipLost):
            _check_fence(database_url, Fence("reconciler-test", frozen_generation))
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)
            process.kill()
        await process.wait()
        await survivor.release()


def _lease_row(database_url: str, name: str) -> tuple[LeaderLeaseRow, dt.datetime]:
    """The loop's lease row, detached, and the clock its expiry is read by."""
    engine = create_engine(database_url)
    try:
        with Session(engine, expire_on_commit=False) as session:
            row = session.get(LeaderLeaseRow, name)
            assert row is not None
            return row, _utc(database_now(session))
    finally:
        engine.dispose()


def _utc(value: dt.datetime | None) -> dt.datetime:
    assert value is not None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


async def test_the_lease_row_reports_the_lead_its_renewals_and_its_end(database_url: str) -> None:
    """What the API reports as the lead (on SQLite too, where the flock is the lead):
    taken, renewed while held, ended at once by a release, and run out when the
    holder stops renewing without a release (frozen or killed)."""
    lead = leadership_for(database_url, "lease-report-test")
    try:
        assert await lead.acquire()
        taken, now = _lease_row(database_url, "lease-report-test")
        assert taken.holder == holder_name()
        assert taken.generation == lead.fence().generation
        assert taken.lease_seconds == LEASE_TTL
        assert _utc(taken.acquired_at) == _utc(taken.renewed_at)
        assert _utc(taken.expires_at) > now
        async with asyncio.timeout(30):  # only stops a hung test
            while True:
                renewed, now = _lease_row(database_url, "lease-report-test")
                if _utc(renewed.renewed_at) > _utc(taken.renewed_at):
                    break
                await asyncio.sleep(0.1)
        assert _utc(renewed.acquired_at) == _utc(taken.acquired_at)
        assert _utc(renewed.expires_at) > now
        await lead.release()
        released, now = _lease_row(database_url, "lease-report-test")
        assert _utc(released.expires_at) <= now

        assert await lead.acquire()
        renewer = lead._renewer  # type: ignore[attr-defined]
        assert renewer is not None
        renewer.cancel()  # renewals stop, the lead is not released
        async with asyncio.timeout(30):  # only stops a hung test
            while True:
                stopped, now = _lease_row(database_url, "lease-report-test")
                if _utc(stopped.expires_at) <= now:
                    break
                await asyncio.sleep(0.2)
        assert stopped.generation == released.generation + 1
        assert _utc(stopped.expires_at) == _utc(stopped.renewed_at) + dt.timedelta(
            seconds=LEASE_TTL
        )
    finally:
        await lead.release()
