"""Wake-ups for StreamNodeCommands: a command was issued to a node.

Local issues poke directly; on PostgreSQL the listener pokes for commands
issued on other replicas (payload: the node id; empty: everyone).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class CommandSignals:
    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = {}

    def poke(self, node_id: str) -> None:
        if not node_id:
            for events in self._waiters.values():
                for event in events:
                    event.set()
            return
        for event in self._waiters.get(node_id, ()):
            event.set()

    @contextlib.contextmanager
    def waiter(self, node_id: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiters.setdefault(node_id, set()).add(event)
        try:
            yield event
        finally:
            events = self._waiters.get(node_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._waiters[node_id]
