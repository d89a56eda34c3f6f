"""One leader among replicas: what every singleton loop relies on, on both databases."""

from __future__ import annotations

import asyncio
import sys

from ppos.controlplane.storage.leadership import SoleLeader, leadership_for

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
        assert await asyncio.wait_for(process.stdout.readline(), 60) == b"leading\n"
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
