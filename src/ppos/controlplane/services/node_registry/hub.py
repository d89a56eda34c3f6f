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
  is just a cursor into it, so a slow one costs no memory of its own;
- each change is framed once per event type; subscribers caught up with the
  same filter share one message per tick.

A subscriber that falls more than `watch_queue` changes behind, or whose
message has not been taken for `watch_stall_timeout`, is cut off alone with
RESOURCE_EXHAUSTED telling it where to resume. On shutdown every stream ends
with UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import DomainError, ResourceExhausted, Unavailable
from ppos.controlplane.core.metrics import (
    WATCH_DROPS,
    WATCH_EVENTS,
    WATCH_FANOUT,
    WATCH_SUBSCRIBERS,
)
from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.services.node_registry import watch_encoding
from ppos.controlplane.services.node_registry.changelog import (
    LoggedEvent,
    consistent_snapshot,
    head_version,
    pruned_through,
)
from ppos.controlplane.services.node_registry.convert import READINESS_NAME, node_to_proto
from ppos.controlplane.services.node_registry.filters import NodeQuery, NodeView
from ppos.controlplane.services.node_registry.models import NodeEventRow, NodeRow
from ppos.controlplane.services.node_registry.settings import NodeRegistrySettings
from ppos.controlplane.storage.database import Database

_log = structlog.get_logger("ppos.noderegistry.watch")

TAIL_BATCH = 1000
MAX_EVENTS_PER_MESSAGE = 1000
MAX_BYTES_PER_MESSAGE = 1 << 20
IDLE_TICK = 1.0  # subscribers wake at least this often (bookmarks, stall checks)
RETRY_DELAY = 1.0
MAX_FLUSH_INTERVAL = 1.0
FANOUT_HEADROOM = 1.5  # publish no more often than 1.5x the time the last fan-out took
CATCH_UP_WAIT = 5.0  # longest a new watch waits for this process to reach the database


@dataclass(frozen=True, slots=True)
class CachedNode:
    view: NodeView
    node: bytes  # the encoded Node message
    version: int


class NodeChange:
    """One node change, encoded once; framed lazily per event type."""

    __slots__ = ("_framed", "cur", "node", "node_id", "prev", "version")

    def __init__(
        self, version: int, node_id: str, prev: NodeView | None, cur: NodeView | None, node: bytes
    ) -> None:
        self.version = version
        self.node_id = node_id
        self.prev = prev
        self.cur = cur
        self.node = node
        self._framed: dict[int, bytes] = {}

    def event_type(self, query: NodeQuery) -> int | None:
        """What this change is for a subscriber with `query` (None: not for it)."""
        if query.everything:
            was, now = self.prev is not None, self.cur is not None
        else:
            was = self.prev is not None and query.matches(self.prev)
            now = self.cur is not None and query.matches(self.cur)
        if was and now:
            return watch_encoding.MODIFIED
        if now:
            return watch_encoding.ADDED
        if was:
            return watch_encoding.DELETED
        return None

    def framed(self, event_type: int) -> bytes:
        data = self._framed.get(event_type)
        if data is None:
            data = self._framed[event_type] = watch_encoding.framed_event(
                event_type, self.version, self.node
            )
        return data


@dataclass(eq=False, slots=True)
class Subscriber:
    query: NodeQuery
    query_key: str
    bookmark_interval: float
    context: Any
    request_id: str
    cursor: int = 0  # sequence number of the next change to look at
    skip_through: int = 0  # resumed ahead of this process: skip versions up to here
    sent_version: int = 0  # version of the last event sent
    snapshot: list[bytes] | None = None
    resync: bool = False
    last_sent: float = 0.0
    send_started: float | None = None  # a message is with gRPC since (loop time)
    cut: DomainError | None = None
    aborted: bool = False  # the status was sent from outside the stream
    registered: bool = False
    task: asyncio.Task[Any] | None = None  # the call's task
    settled: int = 0  # last publish this subscriber was done with


@dataclass(frozen=True)
class TailBatch:
    rows: list[LoggedEvent]
    horizon: int


def _encode(row: NodeRow) -> bytes:
    return node_to_proto(row).SerializeToString()


def _load(session: Session) -> tuple[int, list[tuple[str, CachedNode]]]:
    consistent_snapshot(session)
    head = head_version(session)
    nodes = [
        (row.node_id, CachedNode(NodeView.of(row), _encode(row), row.resource_version))
        for row in session.scalars(select(NodeRow).order_by(NodeRow.node_id))
    ]
    return head, nodes


def view_of(node: node_pb2.Node) -> NodeView:
    return NodeView(
        node.spec.region,
        node.spec.cluster,
        READINESS_NAME.get(node.status.readiness, ""),
        node.status.container.image,
        dict(node.meta.labels),
    )


def _tail(session: Session, after: int, limit: int) -> TailBatch:
    """Events after `after`, each with the node as of its version (one statement).

    Events written by RPCs carry their node. The sweep's set-based events do
    not: the node row is read instead, which is the node as of that version
    unless the node changed again since; such a superseded sweep event is
    folded into the later change (a watcher sees the later state only).
    """
    result = session.execute(
        select(NodeEventRow.event_id, NodeEventRow.node_id, NodeEventRow.payload, NodeRow)
        .outerjoin(
            NodeRow,
            and_(NodeRow.node_id == NodeEventRow.node_id, NodeEventRow.payload.is_(None)),
        )
        .where(NodeEventRow.event_id > after)
        .order_by(NodeEventRow.event_id)
        .limit(limit)
    ).all()
    rows: list[LoggedEvent] = []
    for event_id, node_id, payload, node in result:
        version = int(event_id)
        if payload is not None:
            data = bytes(payload)
            rows.append((version, str(node_id), view_of(node_pb2.Node.FromString(data)), data))
        elif node is not None and node.resource_version == version:
            rows.append((version, str(node_id), NodeView.of(node), _encode(node)))
        else:
            rows.append((version, str(node_id), None, b""))  # superseded or gone
    # Read after the events: if pruning passed `after` meanwhile, events may be missing.
    return TailBatch(rows, pruned_through(session))


class WatchHub:
    def __init__(
        self, db: Database, settings: NodeRegistrySettings, shutdown: asyncio.Event
    ) -> None:
        self._db = db
        self._settings = settings
        self._shutdown = shutdown
        self._cache: dict[str, CachedNode] = {}
        self._order: list[str] = []
        self._window: list[NodeChange] = []
        self._versions: list[int] = []
        self._base_seq = 0
        self._floor = 0  # every change after this version is in the window
        self._head = 0
        # Messages built for subscribers at the same cursor with the same filter,
        # for the current head: (cursor, filter key) -> (bytes, last version).
        self._shared: dict[tuple[int, str], tuple[bytes, int]] = {}
        self._tick = asyncio.Event()  # set then cleared: wakes every waiting stream
        self._subscribers: set[Subscriber] = set()
        self._snapshot_memo: tuple[int, int, dict[str, list[bytes]]] = (-1, -1, {})
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
        self._last_publish = 0.0
        # Fan-out pacing: how long the last publish took to reach (almost) every
        # subscriber, measured from the stream side.
        self._behind = 0
        self._publish_id = 0
        self._fanout_seconds = 0.0
        self._fanned_out = asyncio.Event()
        self._fanned_out.set()
        self._task: asyncio.Task[None] | None = None
        self._shutdown_task: asyncio.Task[None] | None = None
        self._aborts: set[asyncio.Task[None]] = set()

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
        for sub in list(self._subscribers):
            err = Unavailable(
                "server shutting down: reconnect to another replica or retry, and resume "
                f"with resume_from_version={sub.sent_version}",
                retry_after_seconds=1.0,
                reason="SERVER_SHUTTING_DOWN",
            )
            self._cut(sub, err, "shutdown")
        self._resolve_tick()
        self._wake.set()

    async def stop(self) -> None:
        self.close()
        for task in (self._task, self._shutdown_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._aborts:
            await asyncio.wait(self._aborts, timeout=1.0)

    def poke(self) -> None:
        """Something committed node changes it did not offer: read the change log soon."""
        self._must_read = True
        self._wake.set()

    def offer(self, events: Sequence[LoggedEvent]) -> None:
        """Change events a writer of this process has just committed, in version order.

        They are applied as they are when they continue the head version; the
        log is read only for a gap before them.
        """
        head = self._head
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
        return self._head

    @property
    def min_flush_interval(self) -> float:
        """Shortest time between two publishes, whatever is pending.

        The configured interval, or longer when there are so many subscribers that
        one message each per interval would exceed the send rate.
        """
        spread = len(self._subscribers) / self._settings.watch_send_rate
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
        paced = FANOUT_HEADROOM * self._fanout_seconds
        return min(MAX_FLUSH_INTERVAL, max(self.min_flush_interval, paced))

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

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
            # Coalesce: at most one message per flush interval, the paced part of it
            # cut short once the pending changes reach the byte budget.
            delay = self._last_publish + self.min_flush_interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            delay = self._last_publish + self.flush_interval - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._flush_now.wait(), timeout=delay)
            # One fan-out at a time: the next publish waits until (nearly) every
            # subscriber is done with the last one, so a process short of CPU sends
            # fewer, larger messages instead of queueing up more of them.
            patience = min(MAX_FLUSH_INTERVAL, max(0.05, 3 * self._fanout_seconds))
            remaining = self._last_publish + patience - loop.time()
            if remaining > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._fanned_out.wait(), timeout=remaining)
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
                self._check_subscribers(self._head_seq)
                self._resolve_tick()  # wake subscribers for bookmarks

    async def _catch_up(self) -> bool:
        """Apply what was offered, read the log if it may hold more, publish."""
        start = self._head_seq
        published = False
        self._apply_offered()
        if self._announced > self._head:
            self._must_read = True
        if self._must_read:
            self._must_read = False
            self._last_read = asyncio.get_running_loop().time()
            while not self._closing:
                after = self._head
                batch = await self._db.read(functools.partial(_tail, after=after, limit=TAIL_BATCH))
                if batch.horizon > self._head:
                    _log.warning("watch.fell_behind_pruning", head=self._head, pruned=batch.horizon)
                    await self._reload()
                    return True
                if batch.rows:
                    self._apply(batch.rows)
                if len(batch.rows) < TAIL_BATCH:
                    break
                self._publish(start)  # a long catch-up: publish every batch
                published, start = True, self._head_seq
            self._apply_offered()  # offered while reading: drop what the log gave
        if self._head_seq > start:
            self._publish(start)
            published = True
        return published

    def _apply_offered(self) -> None:
        """Apply the offered events that continue the head; a gap is left to the log."""
        if not self._offered:
            return
        rows = []
        version = self._head + 1
        while (event := self._offered.pop(version, None)) is not None:
            rows.append(event)
            version += 1
        if rows:
            self._apply(rows)
        if self._offered:
            head = self._head
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
        head, nodes = await self._db.read(_load)
        for sub in list(self._subscribers):
            sub.resync = True
            self._cut(sub, None, "resync")
        self._cache = dict(nodes)
        self._order = [node_id for node_id, _ in nodes]
        self._base_seq += len(self._window)
        self._window, self._versions = [], []
        self._head = self._floor = head
        self._shared = {}
        self._ready.set()
        self._resolve_tick()
        _log.info("watch.loaded", nodes=len(nodes), resource_version=head)

    @property
    def _head_seq(self) -> int:
        return self._base_seq + len(self._window)

    def _apply(self, rows: Sequence[LoggedEvent]) -> None:
        for version, node_id, view, node in rows:
            if view is None:
                continue  # a later event carries this node's state
            previous = self._cache.get(node_id)
            self._cache[node_id] = CachedNode(view, node, version)
            if previous is None:
                bisect.insort(self._order, node_id)
            prev_view = previous.view if previous is not None else None
            self._window.append(NodeChange(version, node_id, prev_view, view, node))
            self._versions.append(version)
        self._head = max(self._head, rows[-1][0])

    def _publish(self, start_seq: int) -> None:
        WATCH_EVENTS.inc(self._head_seq - start_seq)
        self._shared = {}
        self._trim()
        self._check_subscribers(start_seq)
        self._last_publish = asyncio.get_running_loop().time()
        _log.debug(
            "watch.published",
            changes=self._head_seq - start_seq,
            behind=self._behind,
            fanout=round(self._fanout_seconds, 4),
            interval=round(self.flush_interval, 4),
        )
        self._publish_id += 1
        # Who this fan-out waits for: not a subscriber still stuck in an earlier
        # send (it is the stall timeout's business, not everyone's delay).
        now = asyncio.get_running_loop().time()
        self._behind = 0
        for sub in self._subscribers:
            if sub.send_started is not None and now - sub.send_started > self.flush_interval:
                sub.settled = self._publish_id
            else:
                self._behind += 1
        if self._behind > self._stragglers:
            self._fanned_out.clear()
        self._resolve_tick()

    @property
    def _stragglers(self) -> int:
        """Subscribers a fan-out may leave behind and still count as done."""
        return len(self._subscribers) // 50

    def settle(self, sub: Subscriber) -> None:
        """`sub` is done with the last publish: sent (gRPC took it) or had nothing to send.

        When all but a few subscribers are, the publish's fan-out time is known;
        it paces the next publishes (see `flush_interval`).
        """
        if sub.settled == self._publish_id or sub.cursor < self._head_seq:
            return
        sub.settled = self._publish_id
        self._settled_one()

    def _settled_one(self) -> None:
        self._behind -= 1
        if self._behind <= self._stragglers and not self._fanned_out.is_set():
            spent = asyncio.get_running_loop().time() - self._last_publish
            WATCH_FANOUT.observe(spent)
            self._fanout_seconds = 0.5 * self._fanout_seconds + 0.5 * spent
            self._fanned_out.set()

    def _trim(self) -> None:
        excess = len(self._window) - self._settings.watch_window
        if excess <= max(64, self._settings.watch_window // 8):
            return  # trim in chunks, not on every change
        self._floor = self._versions[excess - 1]
        del self._window[:excess]
        del self._versions[:excess]
        self._base_seq += excess

    def _resolve_tick(self) -> None:
        self._tick.set()
        self._tick.clear()

    def _check_subscribers(self, before_seq: int) -> None:
        """Cut off subscribers that fell behind or stopped taking messages."""
        now = asyncio.get_running_loop().time()
        limit = self._settings.watch_queue
        stall = self._settings.watch_stall_timeout
        for sub in list(self._subscribers):
            lag = before_seq - sub.cursor
            if lag > limit or sub.cursor < self._base_seq:
                why = f"fell {max(lag, limit + 1)} changes behind (limit {limit})"
                self._cut(sub, self._too_slow(sub, why), "queue_full")
            elif sub.send_started is not None and now - sub.send_started > stall:
                self._cut(sub, self._too_slow(sub, f"took no message for {stall:g}s"), "stalled")

    @staticmethod
    def _too_slow(sub: Subscriber, why: str) -> ResourceExhausted:
        err = ResourceExhausted(
            f"WatchNodes subscriber cut off: it {why}. Reconnect with "
            f"resume_from_version={sub.sent_version} (the last version you received) "
            "and read faster",
            subject="WatchNodes subscriber queue",
            retry_after_seconds=1.0,
            reason="WATCH_SUBSCRIBER_TOO_SLOW",
        )
        err.metadata["resume_from_version"] = str(sub.sent_version)
        return err

    def _cut(self, sub: Subscriber, err: DomainError | None, reason: str) -> None:
        if sub.cut is not None or sub.aborted:
            return
        if err is not None:
            sub.cut = err
        WATCH_DROPS.labels(reason=reason).inc()
        self.unsubscribe(sub)
        _log.info("watch.subscriber_cut", reason=reason, request_id=sub.request_id)
        if sub.send_started is not None and err is not None:
            # Blocked in a send: the stream cannot act, so end the call from here.
            task = asyncio.create_task(self._abort(sub, err))
            self._aborts.add(task)
            task.add_done_callback(self._aborts.discard)

    async def _abort(self, sub: Subscriber, err: DomainError) -> None:
        sub.aborted = True
        err.metadata.setdefault("request_id", sub.request_id)
        status = err.to_grpc_status()
        try:
            await sub.context.abort(status.code, status.details, status.trailing_metadata)
        except grpc.aio.AbortError:
            pass  # abort() always raises in the caller; the status is on its way
        except Exception as exc:  # noqa: BLE001 - the client may be gone already
            _log.info("watch.abort_failed", error=type(exc).__name__)
            if sub.task is not None:
                sub.task.cancel()  # free the call at least: the client sees CANCELLED

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
        self._check_admission()  # early, before building a snapshot for nothing
        sub = Subscriber(
            query=query,
            query_key=query.fingerprint() if not query.everything else "*",
            bookmark_interval=bookmark_interval,
            context=context,
            request_id=request_id,
            last_sent=asyncio.get_running_loop().time(),
        )
        if resume_from > self._head:
            latest = await self._db.read(head_version)
            if resume_from > latest:
                sub.resync = True  # not a version of this registry's history
                return sub
        if resume_from == 0:
            # A snapshot reflects every change committed before the call.
            await self._catch_up_to(await self._db.read(head_version))
            sub.snapshot = self._snapshot(query, sub.query_key)
            sub.cursor = self._head_seq
            sub.sent_version = self._head
        elif resume_from < self._floor:
            sub.resync = True
            return sub
        elif resume_from >= self._head:
            sub.cursor = self._head_seq
            sub.skip_through = resume_from
            sub.sent_version = resume_from
        else:
            index = bisect.bisect_right(self._versions, resume_from)
            sub.cursor = self._base_seq + index
            sub.sent_version = resume_from
        # Again: others may have joined, or shutdown begun, while this one waited.
        self._check_admission()
        sub.registered = True
        sub.settled = self._publish_id  # joined after the last publish: not waited for
        self._subscribers.add(sub)
        WATCH_SUBSCRIBERS.inc()
        return sub

    def _check_admission(self) -> None:
        if self._closing:
            raise Unavailable(
                "server shutting down: watch another replica", reason="SERVER_SHUTTING_DOWN"
            )
        if len(self._subscribers) >= self._settings.watch_max_subscribers:
            raise ResourceExhausted(
                f"this server already serves {len(self._subscribers)} WatchNodes streams "
                f"(limit {self._settings.watch_max_subscribers}); retry later or use another "
                "replica",
                subject="WatchNodes streams per process",
                retry_after_seconds=5.0,
                reason="TOO_MANY_WATCHERS",
            )

    async def _catch_up_to(self, version: int) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + CATCH_UP_WAIT
        while self._head < version and not self._closing and loop.time() < give_up:
            self.poke()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tick.wait(), timeout=give_up - loop.time())

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub.registered:
            sub.registered = False
            self._subscribers.discard(sub)
            WATCH_SUBSCRIBERS.dec()
            if sub.settled != self._publish_id:  # the last fan-out waits for it no more
                sub.settled = self._publish_id
                self._settled_one()

    def _snapshot(self, query: NodeQuery, key: str) -> list[bytes]:
        """Messages of the snapshot at the head version (shared while nothing changes)."""
        version, seq, memo = self._snapshot_memo
        if version != self._head or seq != self._head_seq:
            memo = {}
            self._snapshot_memo = (self._head, self._head_seq, memo)
        chunks = memo.get(key)
        if chunks is None:
            head = self._head
            events = [
                watch_encoding.framed_event(watch_encoding.SNAPSHOT, head, cached.node)
                for cached in (self._cache[node_id] for node_id in self._order)
                if query.everything or query.matches(cached.view)
            ]
            events.append(watch_encoding.framed_event(watch_encoding.SNAPSHOT_END, head))
            chunks = memo[key] = _chunk(events)
        return chunks

    async def wait_tick(self) -> None:
        """Until the next publish, idle tick or shutdown."""
        await self._tick.wait()

    def collect(self, sub: Subscriber) -> bytes | None:
        """The next message for `sub` (changes after its cursor), or None when caught up.

        Subscribers at the same cursor with the same filter share one message
        (built once per head): caught-up ones after each publish, and lagging ones
        that lag alike. Others get theirs built in chunks.
        """
        head_seq = self._head_seq
        if sub.cursor >= head_seq:
            return None
        pending = head_seq - sub.cursor
        if (
            pending <= MAX_EVENTS_PER_MESSAGE
            and sub.cursor >= self._base_seq
            and sub.skip_through < self._versions[sub.cursor - self._base_seq]
        ):
            key = (sub.cursor, sub.query_key)
            shared = self._shared.get(key)
            if shared is None:
                shared = self._shared[key] = self._build(sub, sub.cursor)
            blob, last = shared
            if len(blob) <= MAX_BYTES_PER_MESSAGE:
                sub.cursor = head_seq
                if blob:
                    sub.sent_version = last
                return blob or None
        parts: list[bytes] = []
        size = 0
        index = sub.cursor - self._base_seq
        window = self._window
        while index < len(window) and len(parts) < MAX_EVENTS_PER_MESSAGE:
            change = window[index]
            index += 1
            if change.version <= sub.skip_through:
                continue
            kind = change.event_type(sub.query)
            if kind is None:
                continue
            framed = change.framed(kind)
            parts.append(framed)
            size += len(framed)
            sub.sent_version = change.version
            if size >= MAX_BYTES_PER_MESSAGE:
                break
        sub.cursor = self._base_seq + index
        return b"".join(parts) if parts else None

    def _build(self, sub: Subscriber, cursor: int) -> tuple[bytes, int]:
        parts = []
        last = 0
        for change in self._window[cursor - self._base_seq :]:
            kind = change.event_type(sub.query)
            if kind is not None:
                parts.append(change.framed(kind))
                last = change.version
        return b"".join(parts), last

    def bookmark(self, sub: Subscriber) -> bytes:
        sub.sent_version = max(sub.sent_version, self._head)
        return watch_encoding.framed_event(watch_encoding.BOOKMARK, sub.sent_version)

    def resync_event(self) -> bytes:
        return watch_encoding.framed_event(watch_encoding.RESYNC_REQUIRED, self._head)

    def caught_up(self, sub: Subscriber) -> bool:
        return sub.cursor >= self._head_seq


def _chunk(events: list[bytes]) -> list[bytes]:
    chunks: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for event in events:
        if current and (
            len(current) >= MAX_EVENTS_PER_MESSAGE or size + len(event) > MAX_BYTES_PER_MESSAGE
        ):
            chunks.append(b"".join(current))
            current, size = [], 0
        current.append(event)
        size += len(event)
    if current:
        chunks.append(b"".join(current))
    return chunks
