"""How one topic's reads reach its tabs: rendered and encoded once, the same bytes
for every tab, nothing sent when nothing changed, the latest to a tab that connects,
only the newest to a tab a few updates behind, and a tab that stops reading cut alone.
The hub here has no plane: its reads are what the test hands it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest
from jinja2 import DictLoader, Environment

from ppos.controlplane.client import ControlPlaneError, UnavailableError
from ppos.portal.live import CUT, QUEUE_DEPTH, LiveHub, Subscriber, fragment_event, newest
from ppos.portal.plane import OperatorClients
from ppos.portal.sessions import Session, SessionStore

KEY = "rows"
TEMPLATES = {
    "_row.html": '<p class="value">{{ value }}</p>\n<p>second line</p>',
    "_live_error.html": '<p class="error">{{ error }}</p>',
}


class Reads:
    """The topic's reads, handed over one at a time by the test."""

    def __init__(self) -> None:
        self.waiting: asyncio.Queue[dict[str, Any] | ControlPlaneError] = asyncio.Queue()
        self.given = 0
        self.encoded = 0

    async def read(self, _: Session) -> dict[str, Any]:
        update = await self.waiting.get()
        if isinstance(update, ControlPlaneError):
            raise update
        return update

    def counting(self, encode: Callable[[object], bytes]) -> Callable[[object], bytes]:
        def counted(update: object) -> bytes:
            self.encoded += 1
            return encode(update)

        return counted


@pytest.fixture
async def hub() -> AsyncIterator[LiveHub]:
    live = LiveHub(SessionStore(idle_seconds=600, absolute_seconds=600), interval=0.01)
    yield live
    await live.close()


def _session(hub: LiveHub, name: str) -> Session:
    return hub.sessions.create(name, cast(OperatorClients, object()))


def _encoder(reads: Reads) -> Callable[[object], bytes]:
    environment = Environment(loader=DictLoader(TEMPLATES), autoescape=True)
    return reads.counting(fragment_event(environment, "_row.html", "row"))


async def _handed(
    hub: LiveHub, key: str, reads: Reads, update: dict[str, Any] | ControlPlaneError
) -> None:
    """Hands topic `key` one read and waits until it starts the next (by then it has
    handed out what it read)."""
    reads.waiting.put_nowait(update)
    reads.given += 1
    async with asyncio.timeout(10):
        while hub.topics[key].reads <= reads.given:  # noqa: ASYNC110 - the topic's own count
            await asyncio.sleep(0.005)


def _queued(subscriber: Subscriber) -> list[object]:
    items = []
    while not subscriber.queue.empty():
        items.append(subscriber.queue.get_nowait())
    return items


async def test_a_read_is_encoded_once_and_every_tab_gets_the_same_escaped_event(
    hub: LiveHub,
) -> None:
    reads = Reads()
    encode = _encoder(reads)
    tabs = [
        hub.subscribe(KEY, reads.read, _session(hub, f"op{i}"), encode=encode)[1] for i in range(3)
    ]
    await _handed(hub, KEY, reads, {"value": "<script>alert(1)</script>"})
    events = [_queued(tab) for tab in tabs]
    assert reads.encoded == 1
    assert all(len(got) == 1 for got in events)
    assert events[0][0] is events[1][0] is events[2][0]  # one object, not three copies
    assert events[0][0] == (
        b"event: row\r\n"
        b'data: <p class="value">&lt;script&gt;alert(1)&lt;/script&gt;</p>\r\n'
        b"data: <p>second line</p>\r\n\r\n"
    )


async def test_a_refusal_of_the_plane_is_sent_as_an_escaped_event(hub: LiveHub) -> None:
    reads = Reads()
    _, tab = hub.subscribe(KEY, reads.read, _session(hub, "op"), encode=_encoder(reads))
    await _handed(hub, KEY, reads, UnavailableError("plane <down>"))
    (event,) = _queued(tab)
    assert isinstance(event, bytes)
    assert event.startswith(b'event: row\r\ndata: <p class="error">')
    assert b"plane &lt;down&gt;" in event


async def test_a_read_that_shows_nothing_new_is_not_sent(hub: LiveHub) -> None:
    reads = Reads()
    _, tab = hub.subscribe(KEY, reads.read, _session(hub, "op"), encode=_encoder(reads))
    for value in ("1", "1", "2", "2", "1"):
        await _handed(hub, KEY, reads, {"value": value})
    sent = _queued(tab)
    assert reads.encoded == 5
    assert len(sent) == 3
    for event, value in zip(sent, ("1", "2", "1"), strict=True):
        assert isinstance(event, bytes)
        assert f'class="value">{value}<'.encode() in event
    assert len(hub.topics[KEY].subscribers) == 1


async def test_a_tab_that_connects_is_sent_the_latest_view_at_once(hub: LiveHub) -> None:
    reads = Reads()
    encode = _encoder(reads)
    hub.subscribe(KEY, reads.read, _session(hub, "first"), encode=encode)
    await _handed(hub, KEY, reads, {"value": "older"})
    await _handed(hub, KEY, reads, {"value": "latest"})
    _, late = hub.subscribe(KEY, reads.read, _session(hub, "late"), encode=encode)
    (event,) = _queued(late)
    assert isinstance(event, bytes)
    assert b'class="value">latest<' in event


async def test_a_tab_behind_skips_to_the_newest_and_one_that_stops_reading_is_cut_alone(
    hub: LiveHub,
) -> None:
    reads = Reads()
    encode = _encoder(reads)
    topic, stalled = hub.subscribe(KEY, reads.read, _session(hub, "stalled"), encode=encode)
    _, reading = hub.subscribe(KEY, reads.read, _session(hub, "reading"), encode=encode)
    for k in range(QUEUE_DEPTH):
        await _handed(hub, KEY, reads, {"value": str(k)})
    # Both are QUEUE_DEPTH behind: the reading tab takes the newest and skips the rest.
    last = newest(reading, await reading.queue.get())
    assert isinstance(last, bytes)
    assert f'class="value">{QUEUE_DEPTH - 1}<'.encode() in last
    assert reading.queue.empty()
    await _handed(hub, KEY, reads, {"value": "next"})
    assert _queued(stalled) == [CUT]  # its browser reconnects and is sent the latest
    assert topic.subscribers == {reading}
    assert b'class="value">next<' in cast(bytes, newest(reading, await reading.queue.get()))


async def test_a_fragment_with_a_sessions_forms_is_handed_to_each_tab_as_read(
    hub: LiveHub,
) -> None:
    """Without an encoder (the sync panel holds each operator's CSRF token) each tab
    renders the read itself, and a tab that connects is handed the latest read."""
    reads = Reads()
    _, first = hub.subscribe(KEY, reads.read, _session(hub, "first"))
    await _handed(hub, KEY, reads, {"value": "v"})
    await _handed(hub, KEY, reads, {"value": "v"})
    assert _queued(first) == [{"value": "v"}, {"value": "v"}]  # read again: sent again
    _, late = hub.subscribe(KEY, reads.read, _session(hub, "late"))
    assert _queued(late) == [{"value": "v"}]
