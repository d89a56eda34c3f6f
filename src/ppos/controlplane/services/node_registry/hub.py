"""The watch hub: one per process, fanning node changes out to WatchNodes streams.

In the manner of the Kubernetes watch cache:
- a cache of every node's current state (its Node message encoded once),
  loaded in one consistent snapshot with the registry version it reflects;
- a tail of the change log (`node_events`), woken by LISTEN/NOTIFY on
  PostgreSQL (so changes made on any replica reach every replica's watchers)
  and by a poll as a safety net;
- the changes this process commits are handed over by their writers after
  commit (`offer`) and applied without reading the log back, as long as they
  continue the head version; a gap (another replica's or a set-based sweep's
  events, a version a rolled-back transaction drew) is read from the log;
- a bounded window of recent changes, shared by all subscribers: a subscriber
  is just a cursor into it, so a slow one costs no memory of its own (a resume
  from before it reads the changes in between from the log: `watch_replay`);
- each change is framed once per event type; subscribers caught up with the
  same filter share one message per tick.

A subscriber that falls more than `watch_queue` changes behind, or whose
message has not been taken for `watch_stall_timeout`, is cut off alone with
RESOURCE_EXHAUSTED telling it where to resume. On shutdown every stream ends
with UNAVAILABLE.

The hub tails and publishes; `watch_window` holds the cache, the window and the
messages built from them; `watch_subscribers` the subscribers and the fan-out's
pace; `watch_log` reads the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Sequence
from typing import Any

import structlog

from ppos.controlplane.core.errors import Unavailable
from ppos.controlplane.core.metrics import WATCH_EVENTS
from ppos.controlplane.services.node_registry.changelog import LoggedEvent, head_version
from ppos.controlplane.services.node_registry.filters import NodeQuery
from ppos.controlplane.services.node_registry.settings import NodeRegistrySettings
from ppos.controlplane.services.node_registry.watch_log import TAIL_BATCH, load_nodes, read_tail
from ppos.controlplane.services.node_registry.watch_replay import place_from_log
from ppos.controlplane.services.node_registry.watch_subscribers import Subscriber, Subscribers
from ppos.controlplane.services.node_registry.watch_window import ChangeWindow
from ppos.controlplane.storage.database import Database

_log = structlog.get_logger("ppos.noderegistry.watch")

IDLE_TICK = 1.0  # subscribers wake at least this often (bookmarks, stall checks)
RETRY_DELAY = 1.0
MAX_FLUSH_INTERVAL = 1.0
FANOUT_HEADROOM = 1.5  # publish no more often than 1.5x the time the last fan-out took
CATCH_UP_WAIT = 5.0  # longest a new watch waits for this process to reach the database


class WatchHub:
    """Tails the change log into the window and publishes to the subscribers."""

    def __init__(
        self, db: Database, settings: NodeRegistrySettings, shutdown: asyncio.Event
    ) -> None:
        self._db = db
        self._settings = settings
        self._shutdown = shutdown
        self._window = ChangeWindow(settings.watch_window)
        self._subs = Subscribers(settings)
        self._tick = asyncio.Event()  # set then cleared: wakes every waiting stream
        self._wake = asyncio.Event()
        # Committed by this process, not yet applied: version -> event.
        self._offered: dict[int, LoggedEvent] = {}
        # Encoded bytes of the changes offered since the last publish; past
        # `watch_flush_bytes` they go out without waiting for the paced interval.
        self._pending_bytes = 0
        self._flush_now = asyncio.Event()
        self._must_read = True  # the log may hold changes nobody offered
        self._announced = 0  # the highest version a NOTIFY told of
        self._last_read = 0.0
        self._ready = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._shutdown_task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="watch-hub")
        self._shutdown_task = asyncio.create_task(self._close_on_shutdown(), name="watch-hub-stop")

    async def _close_on_shutdown(self) -> None:
        await self._shutdown.wait()
        self.close()

    def close(self) -> None:
        """End every stream with UNAVAILABLE (once)."""
        if self._closing:
            return
        self._closing = True
        for sub in self._subs.members():
            err = Unavailable(
                "server shutting down: reconnect to another replica or retry, and resume "
                f"with resume_from_version={sub.sent_version}",
                retry_after_seconds=1.0,
                reason="SERVER_SHUTTING_DOWN",
            )
            self._subs.cut(sub, err, "shutdown")
        self._resolve_tick()
        self._wake.set()

    async def stop(self) -> None:
        self.close()
        for task in (self._task, self._shutdown_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._subs.wait_aborts()

    def poke(self) -> None:
        """Something committed node changes it did not offer: read the change log soon."""
        self._must_read = True
        self._wake.set()

    def offer(self, events: Sequence[LoggedEvent]) -> None:
        """Change events a writer of this process has just committed, in version order.

        They are applied as they are when they continue the head version; the
        log is read only for a gap before them.
        """
        head = self._window.head
        for event in events:
            if event[0] > head and event[0] not in self._offered:
                self._offered[event[0]] = event
                self._pending_bytes += len(event[3])
        if self._pending_bytes >= self._settings.watch_flush_bytes:
            self._flush_now.set()
        self._wake.set()

    def notified(self, payload: str) -> None:
        """A NOTIFY on the change log's channel: its payload is the last version logged."""
        if not payload.isdigit():
            self.poke()  # a set-based sweep, or a listener that reconnected
            return
        self._announced = max(self._announced, int(payload))
        self._wake.set()

    @property
    def head_version(self) -> int:
        return self._window.head

    @property
    def min_flush_interval(self) -> float:
        """Shortest time between two publishes, whatever is pending: the configured
        interval, or longer when one message per subscriber would exceed the send rate."""
        spread = len(self._subs) / self._settings.watch_send_rate
        return min(MAX_FLUSH_INTERVAL, max(self._settings.watch_flush_interval, spread))

    @property
    def flush_interval(self) -> float:
        """Time between two publishes while less than `watch_flush_bytes` is pending.

        `min_flush_interval`, or longer when the last publish took long to reach
        everyone (the process is short of CPU): a message's fixed cost in the
        event loop is the same whatever its size, so this bounds the fan-out's
        share of the loop (heartbeats and other calls keep theirs) and coalesces
        more changes per message instead. Only the fixed cost amortises: the
        per-byte cost (copies, HTTP/2 flow control) is the same per second at
        any interval, and a fan-out slowed by bytes must not stretch the interval
        and so grow the next messages (that fed on itself, up to
        MAX_FLUSH_INTERVAL): hence the byte budget that cuts the wait short.
        """
        paced = FANOUT_HEADROOM * self._subs.fanout_seconds
        return min(MAX_FLUSH_INTERVAL, max(self.min_flush_interval, paced))

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    # -- tailing ---------------------------------------------------------------

    async def _run(self) -> None:
        while not self._ready.is_set():
            try:
                await self._reload()
            except Exception:  # noqa: BLE001 - logged; retried until the database answers
                _log.exception("watch.load_failed")
                await asyncio.sleep(RETRY_DELAY)
        loop = asyncio.get_running_loop()
        idle_since = loop.time()
        while not self._closing:
            timeout = min(self._settings.watch_poll_interval, IDLE_TICK)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            if self._closing:
                return
            await self._pace()
            self._wake.clear()
            if loop.time() - self._last_read >= self._settings.watch_poll_interval:
                self._must_read = True  # the poll: writers that cannot notify us
            published = False
            try:
                published = await self._catch_up()
            except Exception:  # noqa: BLE001 - logged; the next round retries
                self._must_read = True
                _log.exception("watch.tail_failed")
                await asyncio.sleep(RETRY_DELAY)
            now = loop.time()
            if published:
                idle_since = now
            elif now - idle_since >= IDLE_TICK:
                idle_since = now
                self._subs.check(self._window.head_seq, self._window.base_seq)
                self._resolve_tick()  # wake subscribers for bookmarks

    async def _pace(self) -> None:
        """Wait until the next publish may go out."""
        loop = asyncio.get_running_loop()
        subs = self._subs
        # Coalesce: at most one message per flush interval, the paced part of it
        # cut short once the pending changes reach the byte budget.
        delay = subs.last_publish + self.min_flush_interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        delay = subs.last_publish + self.flush_interval - loop.time()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), timeout=delay)
        # One fan-out at a time: the next publish waits until (nearly) every
        # subscriber is done with the last one, so a process short of CPU sends
        # fewer, larger messages instead of queueing up more of them.
        patience = min(MAX_FLUSH_INTERVAL, max(0.05, 3 * subs.fanout_seconds))
        remaining = subs.last_publish + patience - loop.time()
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(subs.fanned_out.wait(), timeout=remaining)

    async def _catch_up(self) -> bool:
        """Apply what was offered, read the log if it may hold more, publish."""
        window = self._window
        start = window.head_seq
        published = False
        self._apply_offered()
        if self._announced > window.head:
            self._must_read = True
        if self._must_read:
            self._must_read = False
            self._last_read = asyncio.get_running_loop().time()
            while not self._closing:
                after = window.head
                batch = await self._db.read(
                    functools.partial(read_tail, after=after, limit=TAIL_BATCH)
                )
                if batch.horizon > window.head:
                    _log.warning(
                        "watch.fell_behind_pruning", head=window.head, pruned=batch.horizon
                    )
                    await self._reload()
                    return True
                if batch.rows:
                    window.apply(batch.rows)
                if len(batch.rows) < TAIL_BATCH:
                    break
                self._publish(start)  # a long catch-up: publish every batch
                published, start = True, window.head_seq
            self._apply_offered()  # offered while reading: drop what the log gave
        if window.head_seq > start:
            self._publish(start)
            published = True
        return published

    def _apply_offered(self) -> None:
        """Apply the offered events that continue the head; a gap is left to the log."""
        if not self._offered:
            return
        rows = []
        version = self._window.head + 1
        while (event := self._offered.pop(version, None)) is not None:
            rows.append(event)
            version += 1
        if rows:
            self._window.apply(rows)
        if self._offered:
            head = self._window.head
            self._offered = {v: e for v, e in self._offered.items() if v > head}
            if self._offered:
                self._must_read = True  # a gap before them: read the log
        self._pending_bytes = sum(len(event[3]) for event in self._offered.values())
        if self._pending_bytes < self._settings.watch_flush_bytes:
            self._flush_now.clear()

    async def _reload(self) -> None:
        """(Re)load the cache; current subscribers must resync."""
        # Cleared before the read: a wake-up during it asks for another.
        self._must_read = False
        self._last_read = asyncio.get_running_loop().time()
        head, nodes = await self._db.read(load_nodes)
        for sub in self._subs.members():
            sub.resync = True
            self._subs.cut(sub, None, "resync")
        self._window.reset(head, nodes)
        self._ready.set()
        self._resolve_tick()
        _log.info("watch.loaded", nodes=len(nodes), resource_version=head)

    def _publish(self, start_seq: int) -> None:
        window = self._window
        WATCH_EVENTS.inc(window.head_seq - start_seq)
        window.published()
        self._subs.check(start_seq, window.base_seq)
        self._subs.last_publish = asyncio.get_running_loop().time()
        _log.debug(
            "watch.published",
            changes=window.head_seq - start_seq,
            behind=self._subs.behind,
            fanout=round(self._subs.fanout_seconds, 4),
            interval=round(self.flush_interval, 4),
        )
        self._subs.fan_out(self.flush_interval)
        self._resolve_tick()

    def _resolve_tick(self) -> None:
        self._tick.set()
        self._tick.clear()

    # -- subscribers -----------------------------------------------------------

    async def subscribe(
        self,
        query: NodeQuery,
        resume_from: int,
        bookmark_interval: float,
        context: Any,
        request_id: str,
    ) -> Subscriber:
        """A subscriber placed for `resume_from`. It is registered as the last step, with
        no await after it, so a caller cancelled while this waits has nothing to undo
        (watch_stream.serve unregisters it however the stream ends)."""
        await self._ready.wait()
        self._subs.check_admission(closing=self._closing)  # before building a snapshot
        sub = Subscriber(
            query=query,
            query_key=query.fingerprint() if not query.everything else "*",
            bookmark_interval=bookmark_interval,
            context=context,
            request_id=request_id,
            last_sent=asyncio.get_running_loop().time(),
        )
        if resume_from > self._window.head:
            latest = await self._db.read(head_version)
            if resume_from > latest:
                sub.resync = True  # not a version of this registry's history
                return sub
        if resume_from == 0:
            # A snapshot reflects every change committed before the call.
            await self._catch_up_to(await self._db.read(head_version))
            self._window.place_for_snapshot(sub, query)
        elif not self._window.place(sub, resume_from) and not await place_from_log(
            self._db, self._window, sub, resume_from, self._settings.watch_replay_max
        ):
            sub.resync = True  # older than the change log's horizon
            return sub
        # Again: others may have joined, or shutdown begun, while this one waited.
        self._subs.check_admission(closing=self._closing)
        self._subs.add(sub)
        return sub

    async def _catch_up_to(self, version: int) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + CATCH_UP_WAIT
        while self._window.head < version and not self._closing and loop.time() < give_up:
            self.poke()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tick.wait(), timeout=give_up - loop.time())

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subs.remove(sub)

    def settle(self, sub: Subscriber) -> None:
        """`sub` is done with the last publish (see `Subscribers.settle`)."""
        self._subs.settle(sub, self._window.head_seq)

    async def wait_tick(self) -> None:
        """Until the next publish, idle tick or shutdown."""
        await self._tick.wait()

    def collect(self, sub: Subscriber) -> bytes | None:
        """The next message for `sub`, or None when caught up (see `ChangeWindow.collect`)."""
        return self._window.collect(sub)

    def bookmark(self, sub: Subscriber) -> bytes:
        return self._window.bookmark(sub)

    def resync_event(self) -> bytes:
        return self._window.resync_event()
