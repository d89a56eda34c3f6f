"""One WatchNodes stream: snapshot, SNAPSHOT_END, then changes and bookmarks.

The stream yields pre-encoded WatchNodesResponse bytes. Around every yield it
records since when its message is with gRPC, which is how the hub tells a
subscriber that stopped reading (its send never completes) from a busy one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from ppos.controlplane.services.node_registry.hub import Subscriber, WatchHub


async def stream(hub: WatchHub, sub: Subscriber) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    sub.task = asyncio.current_task()
    try:
        if sub.resync:
            yield hub.resync_event()
            return
        # The snapshot's messages are shared with other subscribers of the same
        # version; hold them only while sending (a long-lived stream must not pin them).
        chunks: list[bytes] | None = sub.snapshot or []
        sub.snapshot = None
        index = 0
        while chunks is not None and index < len(chunks):
            if sub.cut is not None:
                raise sub.cut
            sub.send_started = loop.time()
            yield chunks[index]
            sub.send_started = None
            if sub.aborted:
                return
            index += 1
        chunks = None
        sub.last_sent = loop.time()
        while True:
            if sub.aborted:
                return
            if sub.resync:
                yield hub.resync_event()
                return
            if sub.cut is not None:
                raise sub.cut
            payload = hub.collect(sub)
            if payload is None and loop.time() - sub.last_sent >= sub.bookmark_interval:
                payload = hub.bookmark(sub)
            if payload is None:
                await hub.wait_tick()
                continue
            sub.send_started = loop.time()
            yield payload
            payload = None
            sub.send_started = None
            sub.last_sent = loop.time()
    finally:
        hub.unsubscribe(sub)
