"""The unit of work of the node registry's use cases: one write transaction, then the
node changes it committed handed to the watch hub."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session

from ppos.controlplane.services.node_registry.changelog import (
    CHANGED_KEY,
    LoggedEvent,
    logged_events,
)
from ppos.controlplane.services.node_registry.hub import WatchHub
from ppos.controlplane.storage.database import Database

T = TypeVar("T")


class NodeWrites:
    def __init__(self, db: Database, hub: WatchHub) -> None:
        self._db = db
        self._hub = hub

    async def __call__(self, work: Callable[[Session], T]) -> T:
        """Run `work` in one write transaction; then tell the hub what it changed."""
        changed = False
        logged: list[LoggedEvent] = []

        def run(session: Session) -> T:
            nonlocal changed, logged
            result = work(session)
            changed = bool(session.info.get(CHANGED_KEY))
            logged = logged_events(session)
            return result

        result = await self._db.write(run)
        if logged:
            self._hub.offer(logged)  # committed: the hub need not read them back
        if changed:
            self._hub.poke()
        return result
