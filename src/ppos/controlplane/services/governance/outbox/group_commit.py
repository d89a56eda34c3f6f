"""Group commit: many concurrent writes in as few transactions as possible."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Writes items handed in concurrently in as few transactions as possible.

    Each `record` waits until its item is committed and returns what the write
    said of it (`write` answers one result per item, in order). While one
    transaction is being written, items arriving meanwhile gather and go into
    the next one, so eight deliveries finishing together cost one commit, not eight.

    `ready(n)` says whether a group of n items is worth writing now; until it
    is, the group waits for more up to `linger` seconds (more items per
    transaction: fewer statements, commits and thread hand-offs per item).
    """

    def __init__(
        self,
        write: Callable[[list[T]], Awaitable[list[R]]],
        *,
        ready: Callable[[int], bool] = lambda _: True,
        linger: float = 0.0,
    ) -> None:
        self._write = write
        self._ready = ready
        self._linger = linger
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._arrived: asyncio.Future[None] | None = None  # set when an item comes in

    async def record(self, item: T) -> R:
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, done))
        if self._arrived is not None and not self._arrived.done():
            self._arrived.set_result(None)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await done

    async def idle(self) -> None:
        """Wait until everything handed in so far is written (or failed)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.wait([self._flusher])

    async def _gather(self) -> None:
        """Wait, up to the linger, until the pending group is ready."""
        if self._linger <= 0 or self._ready(len(self._pending)):
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._linger
        try:
            while not self._ready(len(self._pending)):
                left = deadline - loop.time()
                if left <= 0:
                    return
                self._arrived = loop.create_future()
                await asyncio.wait([self._arrived], timeout=left)
        finally:
            self._arrived = None

    async def _flush(self) -> None:
        while self._pending:
            await self._gather()
            group, self._pending = self._pending, []
            try:
                results = await self._write([item for item, _ in group])
            except Exception as exc:  # noqa: BLE001 - handed to every waiter of the group
                for _, done in group:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for (_, done), result in zip(group, results, strict=True):
                    if not done.done():
                        done.set_result(result)
