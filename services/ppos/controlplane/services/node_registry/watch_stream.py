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
    try:
        if sub.resync:
            yield hub.resync_event()
            return
        snapshot, sub.snapshot = sub.snapshot or [], None
        for chunk in snapshot:
            if sub.cut is not None:
                raise sub.cut
            sub.send_started = loop.time()
            yield chunk
            sub.send_started = None
            if sub.aborted:
                return
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
            sub.send_started = None
            sub.last_sent = loop.time()
    finally:
        hub.unsubscribe(sub)
