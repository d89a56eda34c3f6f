"""One WatchNodes stream: snapshot, SNAPSHOT_END, then changes and bookmarks.

The stream writes pre-encoded WatchNodesResponse bytes with `context.write`
(no generator hop per message, which matters at a thousand streams). Around
every write it records since when its message is with gRPC, which is how the
hub tells a subscriber that stopped reading (its write never completes) from
a busy one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ppos.controlplane.services.node_registry.hub import WatchHub
from ppos.controlplane.services.node_registry.watch_subscribers import Subscriber


async def serve(
    hub: WatchHub, subscribe: Callable[[], Awaitable[Subscriber]], context: Any
) -> None:
    """Run one stream; its subscriber is registered only inside the block that always
    unregisters it (a client may cancel at any await, the first ones included)."""
    # One frame, not several: it lives as long as the stream, once per subscriber.
    loop = asyncio.get_running_loop()
    write = context.write
    sub: Subscriber | None = None
    try:
        # `subscribe` registers as its last, synchronous step: cancelled while it
        # waits, nothing is registered; cancelled after, `sub` is set.
        sub = await subscribe()
        sub.task = asyncio.current_task()
        # Headers now, on their own: the call can then always be ended from outside
        # (a cut-off) even while its first message waits on a reader that stopped.
        await context.send_initial_metadata(())
        if sub.resync:
            await write(hub.resync_event())
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
            await write(chunks[index])
            sub.send_started = None
            if sub.aborted:
                return
            index += 1
        chunks = None
        sub.sent_version = max(sub.sent_version, sub.replay_through)
        sub.last_sent = loop.time()
        while True:
            if sub.aborted:
                return
            if sub.resync:
                await write(hub.resync_event())
                return
            if sub.cut is not None:
                raise sub.cut
            payload = hub.collect(sub)
            if payload is None:
                hub.settle(sub)
                if loop.time() - sub.last_sent >= sub.bookmark_interval:
                    payload = hub.bookmark(sub)
            if payload is None:
                await hub.wait_tick()
                continue
            sub.send_started = loop.time()
            await write(payload)
            payload = None
            sub.send_started = None
            sub.last_sent = loop.time()
            hub.settle(sub)
    finally:
        if sub is not None:
            hub.unsubscribe(sub)
