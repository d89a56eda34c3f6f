"""Live parts of pages: one reader per topic, fanned out to every open tab by SSE.

A topic is one fragment with its query (the overview panel; the nodes table for
one filter and page; the audit log; admin jobs). However many tabs show it, one
task reads it, with the credential of one of those tabs' sessions, renders it and
encodes it as one server-sent event, once, and hands those bytes to every
subscriber (a fragment holding a session's forms, its CSRF token, is handed over
as read and rendered by each tab); htmx's SSE extension swaps it in. A read that
renders what the tabs already have is not sent. A fragment replaces the whole
view, so a tab that is a few updates behind sends only the newest, and a tab that
connects (or reconnects) is sent the latest at once. A topic fed by the plane's watch
streams (`upstreams`, shared by every topic of the process) reads again only when
one of them reports a change, at most once per `live_interval`, and otherwise
every `fallback` seconds; a topic without upstreams reads every `live_interval`.
A tab that falls behind is cut alone (its browser reconnects and gets the current
view); a subscriber whose session has ended gets `expired` and is dropped; a topic
with no subscriber stops reading and lets go of its upstreams.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from jinja2 import Environment
from sse_starlette.event import ServerSentEvent
from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import Response

from ppos.controlplane.client import ControlPlaneError
from ppos.portal.sessions import Session, SessionStore
from ppos.portal.upstreams import AdminJobWatch, AuditWatch, NodeWatch, SyncWatch, Upstream
from ppos.portal.web import portal_of, session_of

Read = Callable[[Session], Awaitable[dict[str, Any]]]
# A read (a dict, or the plane's refusal) as the bytes of one server-sent event,
# the same for every tab.
Encode = Callable[[object], bytes]
QUEUE_DEPTH = 4  # updates a tab may lag behind before it is cut
CUT = object()
EXPIRED = object()


@dataclass(eq=False)
class Subscriber:
    session: Session
    queue: asyncio.Queue[object] = field(default_factory=lambda: asyncio.Queue(QUEUE_DEPTH))


class Topic:
    """One fragment's reader and the tabs that show it."""

    def __init__(
        self,
        key: Hashable,
        read: Read,
        hub: LiveHub,
        upstreams: tuple[Upstream, ...] = (),
        fallback: float | None = None,
        encode: Encode | None = None,
    ) -> None:
        self.key = key
        self.read = read
        self.encode = encode  # None: each tab renders what is read
        self.hub = hub
        self.subscribers: set[Subscriber] = set()
        self.reads = 0
        self.task: asyncio.Task[None] | None = None
        self.upstreams: set[Upstream] = set()
        self.fallback = fallback
        self.latest: object = None  # the last update handed out, for tabs that connect
        for upstream in upstreams:
            self.hold(upstream)

    def hold(self, upstream: Upstream) -> None:
        """Keep `upstream` running while this topic runs, and wake on its changes."""
        if upstream not in self.upstreams:
            self.upstreams.add(upstream)
            upstream.acquire()

    def let_go(self, upstream: Upstream) -> None:
        if upstream in self.upstreams:
            self.upstreams.discard(upstream)
            upstream.release()

    async def _next(self, last_read: float, seen: dict[Upstream, int]) -> None:
        """Until the next read: a change of an upstream since `seen` (their generations
        taken before the last read, so a change during it is not missed; one held
        since then counts as changed), or the fallback; then no sooner than
        `live_interval` after the last read, so a burst is one read."""
        loop = asyncio.get_running_loop()
        if self.upstreams:
            waits = [asyncio.ensure_future(u.wait_change(seen.get(u, -1))) for u in self.upstreams]
            try:
                await asyncio.wait(
                    waits, timeout=self.fallback, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for waiting in waits:
                    waiting.cancel()
        await asyncio.sleep(max(0.0, last_read + self.hub.interval - loop.time()))

    def _live_session(self) -> Session | None:
        for subscriber in list(self.subscribers):
            session = self.hub.sessions.get(subscriber.session.session_id, touch=False)
            if session is None:
                self._drop(subscriber, EXPIRED)
                self.hub.session_ended(subscriber.session.session_id)
        return next(iter(self.subscribers)).session if self.subscribers else None

    def _drop(self, subscriber: Subscriber, why: object) -> None:
        self.subscribers.discard(subscriber)
        while not subscriber.queue.empty():
            subscriber.queue.get_nowait()
        subscriber.queue.put_nowait(why)

    def _hand_out(self, update: object) -> None:
        self.latest = update
        for subscriber in list(self.subscribers):
            if subscriber.queue.full():
                self._drop(subscriber, CUT)
            else:
                subscriber.queue.put_nowait(update)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while (session := self._live_session()) is not None:
                self.reads += 1
                last_read = loop.time()
                seen = {upstream: upstream.generation for upstream in self.upstreams}
                try:
                    update: object = await self.read(session)
                except ControlPlaneError as error:
                    update = error
                if self.encode is None:
                    self._hand_out(update)
                elif (message := self.encode(update)) != self.latest:
                    self._hand_out(message)  # bytes equal to the tabs' own: nothing new
                await self._next(last_read, seen)
        finally:
            # Ended by close() or a fault: every tab reconnects to a fresh reader.
            for subscriber in list(self.subscribers):
                self._drop(subscriber, CUT)
            for upstream in list(self.upstreams):
                self.let_go(upstream)
            if self.hub.topics.get(self.key) is self:
                del self.hub.topics[self.key]


class LiveHub:
    """The topics of one portal process."""

    def __init__(self, sessions: SessionStore, interval: float, fallback: float = 30.0) -> None:
        self.sessions = sessions
        self.interval = interval
        self.fallback = fallback
        self.topics: dict[Hashable, Topic] = {}
        self.nodes = NodeWatch(self.any_session)
        self.audit = AuditWatch(self.any_session)
        self.sync = SyncWatch(self.any_session)
        self.admin_jobs: dict[str, AdminJobWatch] = {}

    def any_session(self) -> Session | None:
        """A live session of some open tab: the credential an upstream stream uses.
        Called from the streams' threads, so it reads a copy of the topics."""
        for topic in list(self.topics.values()):
            for subscriber in list(topic.subscribers):
                session_id = subscriber.session.session_id
                if self.sessions.get(session_id, touch=False) is not None:
                    return subscriber.session
        return None

    def unsubscribe(self, topic: Topic, subscriber: Subscriber) -> None:
        """A tab left; the last one leaving stops the topic now (not at its next wake,
        which may be a fallback away) and so lets go of its upstreams."""
        topic.subscribers.discard(subscriber)
        if not topic.subscribers and topic.task is not None:
            topic.task.cancel()

    def session_ended(self, session_id: str) -> None:
        """Streams carrying an ended session's credential go on with another's."""
        for upstream in (self.nodes, self.audit, self.sync, *self.admin_jobs.values()):
            if upstream.session_id == session_id:
                upstream.reconnect()

    def admin_job(self, admin_job_id: str) -> AdminJobWatch:
        """The one WatchAdminJob of `admin_job_id` (made on first use; forgotten once
        no topic holds it)."""
        watch = self.admin_jobs.get(admin_job_id)
        if watch is None:
            watch = self.admin_jobs[admin_job_id] = AdminJobWatch(admin_job_id, self.any_session)
        return watch

    def subscribe(
        self,
        key: Hashable,
        read: Read,
        session: Session,
        upstreams: tuple[Upstream, ...] = (),
        encode: Encode | None = None,
    ) -> tuple[Topic, Subscriber]:
        """The tab of `session` on topic `key` (started on first use); sent the
        topic's latest update at once, if it has one. Updates are `encode`d once for
        every tab, or handed to each as read without `encode`."""
        topic = self.topics.get(key)
        if topic is None:
            fallback = self.fallback if upstreams else None
            topic = self.topics[key] = Topic(key, read, self, upstreams, fallback, encode)
        subscriber = Subscriber(session)
        if topic.latest is not None:
            subscriber.queue.put_nowait(topic.latest)
        topic.subscribers.add(subscriber)
        if topic.task is None or topic.task.done():
            topic.task = asyncio.create_task(topic.run())
        return topic, subscriber

    async def close(self) -> None:
        for topic in list(self.topics.values()):
            if topic.task is not None:
                topic.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await topic.task
        for upstream in (self.nodes, self.audit, self.sync, *self.admin_jobs.values()):
            upstream.stop()
            await upstream.join()


def fragment_event(environment: Environment, template_name: str, event: str) -> Encode:
    """Encodes a read as one `event` carrying `template_name` rendered (or the plane's
    refusal), for a fragment with nothing of a session in it."""
    template = environment.get_template(template_name)
    error_template = environment.get_template("_live_error.html")

    def encode(update: object) -> bytes:
        if isinstance(update, ControlPlaneError):
            html = error_template.render(error=update)
        elif isinstance(update, dict):
            html = template.render(**update)
        else:
            raise TypeError(f"a live read gave {type(update).__name__}")
        return ServerSentEvent(data=html, event=event).encode()

    return encode


def newest(subscriber: Subscriber, update: object) -> object:
    """`update`, or a newer one already waiting: each fragment is the whole view, so a
    tab a few updates behind skips to the last (CUT and EXPIRED come alone)."""
    while update is not CUT and update is not EXPIRED and not subscriber.queue.empty():
        update = subscriber.queue.get_nowait()
    return update


async def _events(
    request: Request,
    key: Hashable,
    template_name: str,
    event: str,
    read: Read,
    session: Session,
    upstreams: tuple[Upstream, ...],
    per_session: bool,
) -> AsyncIterator[bytes | dict[str, str]]:
    portal = portal_of(request)
    shared = None if per_session else fragment_event(portal.environment, template_name, event)
    template = portal.environment.get_template(template_name)
    error_template = portal.environment.get_template("_live_error.html")
    topic, subscriber = portal.hub.subscribe(key, read, session, upstreams, shared)
    try:
        while True:
            update = newest(subscriber, await subscriber.queue.get())
            if update is EXPIRED:
                yield {"event": "expired", "data": "signed out"}
                return
            if update is CUT:
                return  # the browser reconnects and is sent the current view
            if isinstance(update, bytes):  # encoded once for every tab
                yield update
            elif isinstance(update, ControlPlaneError):
                yield {"event": event, "data": error_template.render(error=update)}
            elif isinstance(update, dict):  # the fragment holds this session's CSRF token
                yield {"event": event, "data": template.render(session=session, **update)}
    finally:
        portal.hub.unsubscribe(topic, subscriber)


def live_response(
    request: Request,
    key: Hashable,
    template_name: str,
    event: str,
    read: Read,
    upstreams: tuple[Upstream, ...] = (),
    *,
    per_session: bool = False,
) -> Response:
    """The event stream of topic `key` (rendered with `template_name`) for the
    request's session, read again when one of `upstreams` changes (every
    `live_interval` without upstreams); 401 without a session. The fragment is
    rendered and encoded once per update for every tab, or rendered for each tab
    with its session when `per_session` (a fragment with forms)."""
    session = session_of(request, touch=False)
    if session is None:
        return Response("signed out", status_code=401)
    return EventSourceResponse(
        _events(request, key, template_name, event, read, session, upstreams, per_session),
        ping=15,
        send_timeout=10,
    )
