"""Group commit: items arriving together share a write; a group that is not yet
ready waits for more, never past its linger."""

from __future__ import annotations

import asyncio

from ppos.controlplane.services.governance.outbox.group_commit import GroupCommit


class _Writes:
    def __init__(self) -> None:
        self.groups: list[list[int]] = []

    async def write(self, items: list[int]) -> list[int]:
        self.groups.append(list(items))
        await asyncio.sleep(0)
        return [item * 10 for item in items]


async def test_a_ready_item_is_written_at_once() -> None:
    writes = _Writes()
    commit: GroupCommit[int, int] = GroupCommit(writes.write, ready=lambda _: True, linger=5.0)
    assert await asyncio.wait_for(commit.record(1), 1.0) == 10
    assert writes.groups == [[1]]


async def test_a_group_waits_until_ready_and_then_goes_as_one() -> None:
    writes = _Writes()
    commit: GroupCommit[int, int] = GroupCommit(writes.write, ready=lambda n: n >= 3, linger=5.0)
    first = asyncio.create_task(commit.record(1))
    await asyncio.sleep(0.05)
    assert writes.groups == []  # one item of three: waiting for more
    rest = [asyncio.create_task(commit.record(n)) for n in (2, 3)]
    assert await asyncio.wait_for(asyncio.gather(first, *rest), 1.0) == [10, 20, 30]
    assert writes.groups == [[1, 2, 3]]


async def test_a_group_that_never_gets_ready_is_written_after_its_linger() -> None:
    writes = _Writes()
    commit: GroupCommit[int, int] = GroupCommit(writes.write, ready=lambda _: False, linger=0.05)
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert await asyncio.wait_for(commit.record(7), 1.0) == 70
    assert loop.time() - began >= 0.04
    assert writes.groups == [[7]]
