"""A Python WatchNodes subscriber for tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as pb_grpc

SNAPSHOT = pb.WATCH_EVENT_TYPE_SNAPSHOT
SNAPSHOT_END = pb.WATCH_EVENT_TYPE_SNAPSHOT_END
ADDED = pb.WATCH_EVENT_TYPE_ADDED
MODIFIED = pb.WATCH_EVENT_TYPE_MODIFIED
DELETED = pb.WATCH_EVENT_TYPE_DELETED
BOOKMARK = pb.WATCH_EVENT_TYPE_BOOKMARK
RESYNC_REQUIRED = pb.WATCH_EVENT_TYPE_RESYNC_REQUIRED
WAIT = 15.0  # generous upper bound for an expected event; never asserted on


class Watcher:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        metadata: Sequence[tuple[str, str]] = (),
        request: pb.WatchNodesRequest | None = None,
    ) -> None:
        stub = pb_grpc.NodeRegistryServiceStub(channel)
        self.call = stub.WatchNodes(request or pb.WatchNodesRequest(), metadata=metadata)
        self.events: list[pb.WatchEvent] = []
        self.messages = 0

    async def read(self) -> list[pb.WatchEvent] | None:
        """The next message's events; None when the stream ended with OK."""
        message = await asyncio.wait_for(self.call.read(), WAIT)
        if message is grpc.aio.EOF:
            return None
        self.messages += 1
        events = list(message.events)
        self.events.extend(events)
        return events

    async def until(self, done: Callable[[pb.WatchEvent], bool]) -> pb.WatchEvent:
        """Read until an event satisfies `done`."""
        for event in self.events:
            if done(event):
                return event
        while True:
            events = await self.read()
            if events is None:
                raise AssertionError("stream ended before the expected event")
            for event in events:
                if done(event):
                    return event

    async def snapshot(self) -> list[pb.WatchEvent]:
        end = await self.until(lambda e: e.type == SNAPSHOT_END)
        return [e for e in self.events[: self.events.index(end)] if e.type == SNAPSHOT]

    def changes(self) -> list[pb.WatchEvent]:
        return [e for e in self.events if e.type in (ADDED, MODIFIED, DELETED)]

    def cancel(self) -> None:
        self.call.cancel()


def node_event(kind: int, node_id: str, **status: Any) -> Callable[[pb.WatchEvent], bool]:
    def matches(event: pb.WatchEvent) -> bool:
        if event.type != kind or event.node.node_id != node_id:
            return False
        return all(getattr(event.node.status, k) == v for k, v in status.items())

    return matches
