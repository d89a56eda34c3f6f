"""The plane's watch streams, one of each per portal process, shared by every tab.

An `Upstream` runs one of the client library's blocking server streams on its own
thread, with the credential of a signed-in operator whose tab shows a live view
(asked of `pick_session` at each (re)connection, so an ended session hands over to
another). It resumes where it stopped when the stream breaks, and hands each message
to the event loop, where the state lives and a change counter wakes the live topics
waiting on it. It runs while some topic holds it (`acquire`/`release`).

- `NodeWatch`: WatchNodes, unfiltered; every node in memory (a snapshot, then the
  changes), resumed from the last resource version; RESYNC_REQUIRED starts over
  with a fresh snapshot.
- `AuditWatch`: WatchAuditEntries from the portal's start, resumed after the last
  entry seen; the latest `AUDIT_KEPT` entries kept for the live audit log.
- `AdminJobWatch`: WatchAdminJob of one job, its latest state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator
from typing import Any

from ppos.controlplane.client import ControlPlaneError
from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as nr_pb
from ppos.portal.plane import OperatorClients
from ppos.portal.series import Series
from ppos.portal.sessions import Session

log = logging.getLogger("ppos.portal.upstreams")
AUDIT_KEPT = 500
RETRY_FIRST, RETRY_MAX = 0.2, 5.0  # seconds between reconnections, doubling
# A stream does not say when the plane has it registered; this long after opening
# one, the topics read once more, covering what changed while it was being opened.
OPEN_SETTLE = 0.5
_EVENT = nr_pb.WatchEventType
READINESS_SHOWN = ("READY", "NOT_READY", "DRAINING", "REIMAGING", "LOST")


class Upstream:
    """One shared server stream; subclasses say how to open it and what a message does."""

    name = "upstream"

    def __init__(self, pick_session: Callable[[], Session | None]) -> None:
        self._pick_session = pick_session
        self._loop: asyncio.AbstractEventLoop | None = None
        self._users = 0
        self._stop = threading.Event()
        self._stop.set()  # not started
        self._thread: threading.Thread | None = None
        self._stream: Any = None
        self._changed = asyncio.Event()
        self.session_id = ""  # whose credential the current stream carries
        self._reconnects = 0  # reconnect() calls: one landing while a stream opens is kept
        self.generation = 0  # bumped on every change the topics may show
        self.streams_opened = 0
        self.last_error: ControlPlaneError | None = None

    # -- on the event loop ---------------------------------------------------------

    def acquire(self) -> None:
        self._users += 1
        if self._stop.is_set() or self._thread is None or not self._thread.is_alive():
            # A fresh thread with its own stop flag: one still winding down keeps its own.
            self._loop = asyncio.get_running_loop()
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._pump, args=(self._stop,), name=f"portal-{self.name}", daemon=True
            )
            self._thread.start()

    def release(self) -> None:
        self._users = max(0, self._users - 1)
        if self._users == 0:
            self.stop()

    def stop(self) -> None:
        self._stop.set()
        self.reconnect()

    def reconnect(self) -> None:
        """End the current stream; the thread opens the next (resumed) with the
        credential of a session still live."""
        self._reconnects += 1
        stream = self._stream
        if stream is not None:
            stream.cancel()

    async def join(self) -> None:
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, 5)

    @property
    def users(self) -> int:
        return self._users

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    async def wait_change(self, seen: int) -> int:
        """Returns the generation once it differs from `seen`."""
        while self.generation == seen:
            self._changed.clear()
            await self._changed.wait()
        return self.generation

    def changed(self) -> None:
        self.generation += 1
        self._changed.set()

    def apply(self, message: Any) -> None:
        raise NotImplementedError

    def _opened(self, _: object) -> None:
        asyncio.get_running_loop().call_later(OPEN_SETTLE, self.changed)

    # -- on the stream's thread ------------------------------------------------------

    def open(self, clients: OperatorClients) -> Any:
        """The stream, resumed where the last one stopped."""
        raise NotImplementedError

    def seen(self, message: Any) -> None:
        """Notes (on the stream's thread) where to resume after `message`."""

    def finished(self) -> bool:
        """True when the stream has nothing more to say (a job that ended)."""
        return False

    def _pump(self, stop: threading.Event) -> None:
        delay = RETRY_FIRST
        while not stop.is_set():
            asked = self._reconnects
            session = self._pick_session()
            if session is None:
                stop.wait(RETRY_FIRST)
                continue
            self.session_id = session.session_id
            try:
                stream = self._stream = self.open(session.clients)
                if self._reconnects != asked:  # asked while this one opened: not this session
                    stream.cancel()
                self.streams_opened += 1
                self._to_loop(self._opened, None)
                for message in self._messages(stream, stop):
                    self.seen(message)
                    self._to_loop(self.apply, message)
                    delay = RETRY_FIRST
                if self.finished():
                    return
                delay = RETRY_FIRST  # ended by reconnect() or the plane: go on at once
            except ControlPlaneError as error:
                self.last_error = error
                log.info("portal: %s stream ended (%s); resuming", self.name, error.code.name)
            stop.wait(delay)
            delay = min(delay * 2, RETRY_MAX)

    @staticmethod
    def _messages(stream: Any, stop: threading.Event) -> Iterator[Any]:
        if stop.is_set():  # stopped while opening: stop() may have missed this stream
            stream.cancel()
            return
        yield from stream

    def _to_loop(self, function: Callable[[Any], None], message: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(function, message)


class NodeWatch(Upstream):
    """Every node, kept current by one WatchNodes stream."""

    name = "WatchNodes"

    def __init__(self, pick_session: Callable[[], Session | None]) -> None:
        super().__init__(pick_session)
        self.nodes: dict[str, node_pb2.Node] = {}
        self.synced = False  # a full snapshot has arrived
        self.resyncs = 0
        # Per region, nodes by readiness (READINESS_SHOWN) over the last hour, fed by
        # the overview (which counts them anyway) rather than on every change.
        self.readiness = Series()
        self._snapshot: dict[str, node_pb2.Node] = {}
        self._resume = 0  # the stream thread's own resume point

    def open(self, clients: OperatorClients) -> Any:
        return clients.nodes.watch_nodes(resume_from_version=self._resume)

    def seen(self, message: nr_pb.WatchNodesResponse) -> None:
        for event in message.events:
            if event.type == _EVENT.WATCH_EVENT_TYPE_RESYNC_REQUIRED:
                self._resume = 0  # too far behind: list again (a snapshot)
            elif event.resource_version:
                self._resume = max(self._resume, event.resource_version)

    def apply(self, message: nr_pb.WatchNodesResponse) -> None:
        changed = False
        for event in message.events:
            kind = event.type
            if kind == _EVENT.WATCH_EVENT_TYPE_SNAPSHOT:
                self._snapshot[event.node.node_id] = event.node
            elif kind == _EVENT.WATCH_EVENT_TYPE_SNAPSHOT_END:
                self.nodes, self._snapshot = self._snapshot, {}
                self.synced = changed = True
            elif kind in (_EVENT.WATCH_EVENT_TYPE_ADDED, _EVENT.WATCH_EVENT_TYPE_MODIFIED):
                self.nodes[event.node.node_id] = event.node
                changed = True
            elif kind == _EVENT.WATCH_EVENT_TYPE_DELETED:
                self.nodes.pop(event.node.node_id, None)
                changed = True
            elif kind == _EVENT.WATCH_EVENT_TYPE_RESYNC_REQUIRED:
                self.resyncs += 1
                self._snapshot = {}
        if changed:
            self.changed()

    def readiness_by_region(self) -> dict[str, Counter[str]]:
        regions: dict[str, Counter[str]] = defaultdict(Counter)
        for node in self.nodes.values():
            name = node_pb2.Readiness.Name(node.status.readiness).removeprefix("READINESS_")
            regions[node.spec.region][name] += 1
        return dict(sorted(regions.items()))


class AuditWatch(Upstream):
    """The audit entries written since the portal started watching."""

    name = "WatchAuditEntries"

    def __init__(self, pick_session: Callable[[], Session | None]) -> None:
        super().__init__(pick_session)
        self.entries: deque[res.AuditEntry] = deque(maxlen=AUDIT_KEPT)
        self._after = 0

    def start_after(self, audit_id: int) -> None:
        """Where a stream not yet started begins: after the newest entry a page shows,
        so nothing written between that page and its live rows is missed."""
        if not self.running and not self._after:
            self._after = audit_id

    def open(self, clients: OperatorClients) -> Any:
        return clients.governance.watch_audit(after_audit_id=self._after)

    def seen(self, message: Any) -> None:
        self._after = max(self._after, message.entry.audit_id)

    def apply(self, message: Any) -> None:
        self.entries.append(message.entry)
        self.changed()

    def after(self, audit_id: int, *, kind: str = "", resource: str = "") -> list[res.AuditEntry]:
        return [
            e
            for e in self.entries
            if e.audit_id > audit_id
            and (not kind or e.resource_kind == kind)
            and (not resource or e.resource_id == resource)
        ]


ADMIN_JOB_DONE = (
    res.ADMIN_JOB_STATE_SUCCEEDED,
    res.ADMIN_JOB_STATE_FAILED,
    res.ADMIN_JOB_STATE_CANCELLED,
)


class AdminJobWatch(Upstream):
    """One admin job's progress, from WatchAdminJob."""

    name = "WatchAdminJob"

    def __init__(self, admin_job_id: str, pick_session: Callable[[], Session | None]) -> None:
        super().__init__(pick_session)
        self.admin_job_id = admin_job_id
        self.job: res.AdminJob | None = None
        self._done = False

    def open(self, clients: OperatorClients) -> Any:
        return clients.governance.watch_admin_job(self.admin_job_id)

    def seen(self, message: Any) -> None:
        self._done = message.job.state in ADMIN_JOB_DONE

    def finished(self) -> bool:
        return self._done

    def apply(self, message: Any) -> None:
        self.job = message.job
        self.changed()


class SyncWatch(Upstream):
    """Every region's sync status from WatchSyncStatus, and per region the last hour
    of (records, quarantined, lag seconds) for the overview's charts."""

    name = "WatchSyncStatus"

    def __init__(
        self, pick_session: Callable[[], Session | None], clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(pick_session)
        self.statuses: dict[str, Any] = {}
        self.series = Series(clock)

    def open(self, clients: OperatorClients) -> Any:
        return clients.sync.watch_status()

    def apply(self, message: Any) -> None:
        self.record(message.status)
        self.changed()

    def record(self, status: Any) -> None:
        """Keep `status` and its point in its region's series (also called with the
        statuses the overview lists, so the series goes on while nothing streams)."""
        self.statuses[status.region] = status
        lag = status.lag.ToTimedelta().total_seconds() if status.HasField("lag") else 0.0
        values = (float(status.records_synced), float(status.quarantined_count), round(lag, 1))
        self.series.record(status.region, values)

    def growth(self, window: float) -> dict[str, int]:
        """Records quarantined per region within the last `window` seconds."""
        grown = {}
        for region in self.series.points:
            span = self.series.since(region, window)
            if span is not None:
                grown[region] = int(span[1][1] - span[0][1])
        return grown
