"""The watch hub's subscribers: admission, cut-offs, and the pace of the fan-out.

A subscriber that falls more than `watch_queue` changes behind, or whose
message has not been taken for `watch_stall_timeout`, is cut off alone with
RESOURCE_EXHAUSTED telling it where to resume. Each publish is done when all
but a few subscribers have sent it (or had nothing to send); how long that
took paces the next publishes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import grpc
import structlog

from ppos.controlplane.core.errors import DomainError, ResourceExhausted, Unavailable
from ppos.controlplane.core.metrics import WATCH_DROPS, WATCH_FANOUT, WATCH_SUBSCRIBERS
from ppos.controlplane.services.node_registry.filters import NodeQuery
from ppos.controlplane.services.node_registry.settings import NodeRegistrySettings

_log = structlog.get_logger("ppos.noderegistry.watch")
ABORT_WAIT = 1.0


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
    replay_through: int = 0  # the snapshot holds changes from the log up to this version
    resync: bool = False
    last_sent: float = 0.0
    send_started: float | None = None  # a message is with gRPC since (loop time)
    cut: DomainError | None = None
    aborted: bool = False  # the status was sent from outside the stream
    registered: bool = False
    task: asyncio.Task[Any] | None = None  # the call's task
    settled: int = 0  # last publish this subscriber was done with


class Subscribers:
    def __init__(self, settings: NodeRegistrySettings) -> None:
        self._settings = settings
        self._members: set[Subscriber] = set()
        self._aborts: set[asyncio.Task[None]] = set()
        # Fan-out pacing: how long the last publish took to reach (almost) every
        # subscriber, measured from the stream side.
        self.last_publish = 0.0
        self.publish_id = 0
        self.behind = 0
        self.fanout_seconds = 0.0
        self.fanned_out = asyncio.Event()
        self.fanned_out.set()

    def __len__(self) -> int:
        return len(self._members)

    def members(self) -> list[Subscriber]:
        return list(self._members)

    def check_admission(self, *, closing: bool) -> None:
        if closing:
            raise Unavailable(
                "server shutting down: watch another replica", reason="SERVER_SHUTTING_DOWN"
            )
        if len(self._members) >= self._settings.watch_max_subscribers:
            raise ResourceExhausted(
                f"this server already serves {len(self._members)} WatchNodes streams "
                f"(limit {self._settings.watch_max_subscribers}); retry later or use another "
                "replica",
                subject="WatchNodes streams per process",
                retry_after_seconds=5.0,
                reason="TOO_MANY_WATCHERS",
            )

    def add(self, sub: Subscriber) -> None:
        sub.registered = True
        sub.settled = self.publish_id  # joined after the last publish: not waited for
        self._members.add(sub)
        WATCH_SUBSCRIBERS.inc()

    def remove(self, sub: Subscriber) -> None:
        if sub.registered:
            sub.registered = False
            self._members.discard(sub)
            WATCH_SUBSCRIBERS.dec()
            if sub.settled != self.publish_id:  # the last fan-out waits for it no more
                sub.settled = self.publish_id
                self._settled_one()

    # -- cut-offs --------------------------------------------------------------

    def check(self, before_seq: int, base_seq: int) -> None:
        """Cut off subscribers that fell behind or stopped taking messages."""
        now = asyncio.get_running_loop().time()
        limit = self._settings.watch_queue
        stall = self._settings.watch_stall_timeout
        for sub in list(self._members):
            lag = before_seq - sub.cursor
            if lag > limit or sub.cursor < base_seq:
                why = f"fell {max(lag, limit + 1)} changes behind (limit {limit})"
                self.cut(sub, _too_slow(sub, why), "queue_full")
            elif sub.send_started is not None and now - sub.send_started > stall:
                self.cut(sub, _too_slow(sub, f"took no message for {stall:g}s"), "stalled")

    def cut(self, sub: Subscriber, err: DomainError | None, reason: str) -> None:
        if sub.cut is not None or sub.aborted:
            return
        if err is not None:
            sub.cut = err
        WATCH_DROPS.labels(reason=reason).inc()
        self.remove(sub)
        _log.info("watch.subscriber_cut", reason=reason, request_id=sub.request_id)
        if sub.send_started is not None and err is not None:
            # Blocked in a send: the stream cannot act, so end the call from here.
            task = asyncio.create_task(_abort(sub, err))
            self._aborts.add(task)
            task.add_done_callback(self._aborts.discard)

    async def wait_aborts(self) -> None:
        """Until the calls being ended from here are (at most ABORT_WAIT)."""
        if self._aborts:
            await asyncio.wait(self._aborts, timeout=ABORT_WAIT)

    # -- fan-out pacing --------------------------------------------------------

    def fan_out(self, flush_interval: float) -> None:
        """A publish went out: who it waits for before it counts as done."""
        self.publish_id += 1
        # Not a subscriber still stuck in an earlier send (it is the stall
        # timeout's business, not everyone's delay).
        now = asyncio.get_running_loop().time()
        self.behind = 0
        for sub in self._members:
            if sub.send_started is not None and now - sub.send_started > flush_interval:
                sub.settled = self.publish_id
            else:
                self.behind += 1
        if self.behind > self._stragglers:
            self.fanned_out.clear()

    @property
    def _stragglers(self) -> int:
        """Subscribers a fan-out may leave behind and still count as done."""
        return len(self._members) // 50

    def settle(self, sub: Subscriber, head_seq: int) -> None:
        """`sub` is done with the last publish: sent (gRPC took it) or had nothing to send.

        When all but a few subscribers are, the publish's fan-out time is known;
        it paces the next publishes (see `WatchHub.flush_interval`).
        """
        if sub.settled == self.publish_id or sub.cursor < head_seq:
            return
        sub.settled = self.publish_id
        self._settled_one()

    def _settled_one(self) -> None:
        self.behind -= 1
        if self.behind <= self._stragglers and not self.fanned_out.is_set():
            spent = asyncio.get_running_loop().time() - self.last_publish
            WATCH_FANOUT.observe(spent)
            self.fanout_seconds = 0.5 * self.fanout_seconds + 0.5 * spent
            self.fanned_out.set()


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


async def _abort(sub: Subscriber, err: DomainError) -> None:
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
