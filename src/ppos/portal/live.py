"""Live parts of pages: one reader per topic, fanned out to every open tab by SSE.

A topic is one fragment with its query (the overview panel; the nodes table for
one filter and page; the sync panel). However many tabs show it, one task reads
it from the plane each `live_interval`, with the credential of one of those tabs'
sessions, and hands the result to every subscriber; each tab renders it with its
own session (its CSRF token) and htmx's SSE extension swaps it in. A tab that
falls behind is cut alone (its browser reconnects and gets the current view); a
subscriber whose session has ended gets `expired` and is dropped; a topic with
no subscriber stops reading.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import Response

from ppos.controlplane.client import ControlPlaneError
from ppos.portal.sessions import Session, SessionStore
from ppos.portal.web import portal_of, session_of

Read = Callable[[Session], Awaitable[dict[str, Any]]]
QUEUE_DEPTH = 4  # updates a tab may lag behind before it is cut
_CUT = object()
_EXPIRED = object()


@dataclass(eq=False)
class Subscriber:
    session: Session
    queue: asyncio.Queue[object] = field(default_factory=lambda: asyncio.Queue(QUEUE_DEPTH))


class Topic:
    """One fragment's reader and the tabs that show it."""

    def __init__(self, key: Hashable, read: Read, hub: LiveHub) -> None:
        self.key = key
        self.read = read
        self.hub = hub
        self.subscribers: set[Subscriber] = set()
        self.reads = 0
        self.task: asyncio.Task[None] | None = None

    def _live_session(self) -> Session | None:
        for subscriber in list(self.subscribers):
            session = self.hub.sessions.get(subscriber.session.session_id, touch=False)
            if session is None:
                self._drop(subscriber, _EXPIRED)
        return next(iter(self.subscribers)).session if self.subscribers else None

    def _drop(self, subscriber: Subscriber, why: object) -> None:
        self.subscribers.discard(subscriber)
        while not subscriber.queue.empty():
            subscriber.queue.get_nowait()
        subscriber.queue.put_nowait(why)

    async def run(self) -> None:
        try:
            while (session := self._live_session()) is not None:
                self.reads += 1
                try:
                    update: object = await self.read(session)
                except ControlPlaneError as error:
                    update = error
                for subscriber in list(self.subscribers):
                    if subscriber.queue.full():
                        self._drop(subscriber, _CUT)
                    else:
                        subscriber.queue.put_nowait(update)
                await asyncio.sleep(self.hub.interval)
        finally:
            # Ended by close() or a fault: every tab reconnects to a fresh reader.
            for subscriber in list(self.subscribers):
                self._drop(subscriber, _CUT)
            self.hub.topics.pop(self.key, None)


class LiveHub:
    """The topics of one portal process."""

    def __init__(self, sessions: SessionStore, interval: float) -> None:
        self.sessions = sessions
        self.interval = interval
        self.topics: dict[Hashable, Topic] = {}

    def subscribe(self, key: Hashable, read: Read, session: Session) -> tuple[Topic, Subscriber]:
        topic = self.topics.get(key)
        if topic is None:
            topic = self.topics[key] = Topic(key, read, self)
        subscriber = Subscriber(session)
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


async def _events(
    request: Request, key: Hashable, template_name: str, event: str, read: Read, session: Session
) -> AsyncIterator[dict[str, str]]:
    portal = portal_of(request)
    template = portal.environment.get_template(template_name)
    error_template = portal.environment.get_template("_live_error.html")
    topic, subscriber = portal.hub.subscribe(key, read, session)
    try:
        while True:
            update = await subscriber.queue.get()
            if update is _EXPIRED:
                yield {"event": "expired", "data": "signed out"}
                return
            if update is _CUT:
                return  # the browser reconnects and starts from the current view
            if isinstance(update, ControlPlaneError):
                yield {"event": event, "data": error_template.render(error=update)}
            elif isinstance(update, dict):
                yield {"event": event, "data": template.render(session=session, **update)}
    finally:
        topic.subscribers.discard(subscriber)


def live_response(
    request: Request, key: Hashable, template_name: str, event: str, read: Read
) -> Response:
    """The event stream of topic `key` (rendered with `template_name`) for the
    request's session; 401 without one."""
    session = session_of(request, touch=False)
    if session is None:
        return Response("signed out", status_code=401)
    return EventSourceResponse(
        _events(request, key, template_name, event, read, session), ping=15, send_timeout=10
    )
