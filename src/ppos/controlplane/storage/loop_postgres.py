"""PostgreSQL statements on the event loop, on a few connections of their own.

A quick read on PostgreSQL is one round trip of a prepared statement; the
database does the work in its own process, so the event loop only sends the
statement and reads the rows (through libpq directly: `storage.pq_statements`). Done
in a reader thread instead, each read also paid the hop to the thread and back
(two wake-ups, the GIL passed twice), which cost more than the read itself.

`LoopConnections` keeps at most `size` psycopg `AsyncConnection`s (autocommit,
outside the engine's pool, opened with the engine's connection arguments): a
statement takes an idle one, or opens one while fewer than `size` exist, or
waits its turn. Each statement is its own snapshot, so a read sees every write
committed before it began, whichever connection it runs on. The connections
belong to the event loop that opened them; on another loop (a new one in
tests) the old ones are closed and new ones opened. A connection found lost
(the server ended the session or restarted) is dropped and the statement run
once more on a new one (a read is safe to repeat); lost a second time, the
error is raised as SQLAlchemy raises an invalidated connection's (answered
UNAVAILABLE by `storage.failures`). A statement cancelled mid-way (its caller
gave up) leaves its connection to the next statement only if it is idle
again. `close()` (the engine was disposed) closes them all, from
any thread; a statement still waiting for a connection then fails as on a
lost one.

Reads wanting the same rows share one statement while they wait, and a hot
read waits a little to be shared:
- when every connection is busy, a read of the same SQL and parameters as one
  still waiting for a connection takes that read's rows instead of waiting
  for a connection of its own;
- a read whose same statement was sent less than `coalesce_window` ago (2 ms
  by default) waits until that window has passed since the send, and goes as
  one statement with every identical read arriving meanwhile. A read of a
  statement not sent within the window goes at once: only a hot read (more
  than one a window) waits, at most the window, and the database sees a hot
  read at most once a window and round trip.
Only a statement not yet sent is shared, so its snapshot is taken after every
caller sharing it arrived: each still sees every write committed before it
began. Dashboards and clients polling the same page, or many callers asking
for the same node, then cost the database and the event loop one round trip
among them. On a loaded server that is most of a read's cost: the send, the
wake-up for the reply and the rows loaded (measured in `bench/bench_read_path`).
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import psycopg
from psycopg import pq

from ppos.controlplane.storage.pq_statements import PqStatements

_Pair = tuple[psycopg.AsyncConnection[Any], PqStatements]
# (the driver's error, whether the connection was lost) -> what the caller raises
ErrorMaker = Callable[[psycopg.Error, bool], Exception]
# Run on each connection as it is opened (adapters: how values are loaded).
Configure = Callable[[psycopg.AsyncConnection[Any]], None]
_IDLE = pq.TransactionStatus.IDLE
# How long a hot read waits to share one statement with the same reads (see the module).
COALESCE_WINDOW = 0.002


class _LoopPool:
    """One event loop's connections. Used on that loop's thread only, except
    `close()`, which only marks it closed and closes the connections."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        size: int,
        conninfo: tuple[Sequence[Any], dict[str, Any]],
        configure: Configure | None = None,
        window: float = 0.0,
    ) -> None:
        self.loop = loop
        self._window = window  # the coalescing window (see the module); 0: none
        self._configure = configure
        self.closed = False
        self._size = size
        self._args, self._kwargs = conninfo
        self._idle: list[_Pair] = []
        self._waiting: collections.deque[asyncio.Future[_Pair | None]] = collections.deque()
        self._count = 0
        self._opened: set[psycopg.AsyncConnection[Any]] = set()
        self._lock = threading.Lock()  # `_opened` and `closed`: close() may be on any thread
        # Statements waiting (for a connection or their window), not yet sent,
        # by (SQL, parameters).
        self.waiting_reads: dict[Hashable, asyncio.Future[list[Any]]] = {}
        # When each statement was last sent (loop time), oldest first: only those
        # sent within the coalescing window are kept.
        self._sent: dict[Hashable, float] = {}

    def busy(self) -> bool:
        """Whether a statement now would wait for a connection."""
        return not self._idle and self._count >= self._size

    def hot_for(self, key: Hashable) -> float:
        """How long a read of `key` waits for its window: 0 unless the same
        statement was sent less than the window ago."""
        last = self._sent.get(key)
        if last is None:
            return 0.0
        return max(0.0, last + self._window - self.loop.time())

    def sending(self, key: Hashable) -> None:
        """Note that the statement `key` is being sent now; forget those sent
        more than the window ago (so at most the statements of one window are kept)."""
        window = self._window
        if not window:
            return
        now = self.loop.time()
        sent = self._sent
        sent.pop(key, None)
        sent[key] = now
        while True:
            oldest = next(iter(sent))
            if sent[oldest] + window > now:
                break
            del sent[oldest]

    async def take(self) -> _Pair:
        while self._idle:
            pair = self._idle.pop()
            if not pair[0].closed:
                return pair
            self._forget(pair[0])
        if self.closed:
            raise psycopg.OperationalError("the database was closed")
        if self._count >= self._size:
            handed = await self._wait()
            if handed is not None:
                return handed
            # None: a connection was dropped, its slot is free; open one in it.
        self._count += 1
        try:
            connection = await psycopg.AsyncConnection.connect(
                *self._args, **self._kwargs, autocommit=True
            )
        except BaseException:
            self._count -= 1
            self._pass_on(None)
            raise
        if self._configure is not None:
            self._configure(connection)
        with self._lock:
            if self.closed:
                connection.pgconn.finish()
                raise psycopg.OperationalError("the database was closed")
            self._opened.add(connection)
        return connection, PqStatements(connection)

    async def _wait(self) -> _Pair | None:
        waiter: asyncio.Future[_Pair | None] = self.loop.create_future()
        self._waiting.append(waiter)
        try:
            handed = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._pass_on(waiter.result())
            raise
        if handed is None and self.closed:
            raise psycopg.OperationalError("the database was closed")
        return handed

    def give_back(self, pair: _Pair) -> None:
        connection = pair[0]
        if self.closed or connection.closed or connection.pgconn.transaction_status != _IDLE:
            self._forget(connection)
            connection.pgconn.finish()  # what AsyncConnection.close() does, without awaiting
            self._pass_on(None)
        else:
            self._pass_on(pair)

    def _forget(self, connection: psycopg.AsyncConnection[Any]) -> None:
        with self._lock:
            self._opened.discard(connection)
        self._count -= 1

    def _pass_on(self, pair: _Pair | None) -> None:
        """A connection (or, None, a free slot) to the first caller still waiting;
        a connection nobody waits for goes idle."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(pair)
                return
        if pair is not None:
            self._idle.append(pair)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            opened, self._opened = self._opened, set()
        for connection in opened:
            connection.pgconn.finish()


class LoopConnections:
    """At most `size` autocommit connections on the running event loop (see the module)."""

    def __init__(
        self,
        conninfo: tuple[Sequence[Any], dict[str, Any]],
        size: int,
        configure: Configure | None = None,
        coalesce_window: float = COALESCE_WINDOW,
    ) -> None:
        """`configure`: run on each connection as it is opened; `coalesce_window`:
        how long (seconds) a hot read waits to share its statement, 0 for never."""
        self._conninfo = conninfo
        self._window = coalesce_window
        self._size = size
        self._configure = configure
        self._pool: _LoopPool | None = None

    def _current(self) -> _LoopPool:
        loop = asyncio.get_running_loop()
        pool = self._pool
        if pool is None or pool.loop is not loop or pool.closed:
            if pool is not None:
                pool.close()
            pool = self._pool = _LoopPool(
                loop, self._size, self._conninfo, self._configure, self._window
            )
        return pool

    async def fetch(self, sql: str, params: Any, error: ErrorMaker) -> list[Any]:
        """The rows of one prepared statement; a driver error is raised as `error`
        makes it of the error and whether the connection was lost. Shared with
        the same statement waiting to be sent; a hot one waits for its window
        (see the module)."""
        pool = self._current()
        if not self._window and not pool.busy():
            return await self._fetch(sql, params, error, None, 0.0)
        key = _read_key(sql, params)
        if key is None:
            return await self._fetch(sql, params, error, None, 0.0)
        shared = pool.waiting_reads.get(key)
        if shared is None:
            delay = pool.hot_for(key)
            if not delay and not pool.busy():
                pool.sending(key)  # no read joins it: sent from here on
                return await self._fetch(sql, params, error, None, 0.0)
            shared = pool.waiting_reads[key] = asyncio.ensure_future(
                self._fetch(sql, params, error, key, delay)
            )
            shared.add_done_callback(_retrieved)
        # Shielded: a caller that gives up leaves the statement to the others.
        return list(await asyncio.shield(shared))

    async def _fetch(
        self, sql: str, params: Any, error: ErrorMaker, shared_as: Hashable | None, delay: float
    ) -> list[Any]:
        """`fetch` on a connection of its own, after `delay` seconds; `shared_as`:
        the key under which other reads may join it until it is sent."""
        if delay:
            await asyncio.sleep(delay)
        for attempt in (1, 2):
            pool = self._current()
            try:
                try:
                    pair = await pool.take()
                finally:  # sent from here on (or failed): later reads wait on their own
                    if shared_as is not None:
                        pool.waiting_reads.pop(shared_as, None)
                        pool.sending(shared_as)
                        shared_as = None
            except psycopg.Error as exc:  # cannot connect: as the engine's pool would raise it
                raise error(exc, False) from exc
            connection, statements = pair
            try:
                rows = await statements.rows(sql, params)
            except psycopg.Error as exc:
                lost = connection.closed or connection.broken
                pool.give_back(pair)
                if lost and attempt == 1:
                    continue
                raise error(exc, lost) from exc
            except BaseException:  # cancelled: give_back keeps it only if it is idle
                pool.give_back(pair)
                raise
            pool.give_back(pair)
            return rows
        raise AssertionError("unreachable: the second attempt returns or raises")

    def close(self) -> None:
        """Closes every connection; the next statement opens new ones."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


def _retrieved(shared: asyncio.Future[list[Any]]) -> None:
    """Marks a shared read's error as seen: every caller may have given up, and
    each caller still waiting has it raised anyway."""
    if not shared.cancelled():
        shared.exception()


def _read_key(sql: str, params: Any) -> Hashable | None:
    """What identifies a read for sharing: its SQL and parameter values; None for
    parameters that cannot be compared so (then it is never shared)."""
    values = tuple(params.items()) if isinstance(params, dict) else params
    try:
        hash(values)
    except TypeError:
        return None
    return (sql, values)
