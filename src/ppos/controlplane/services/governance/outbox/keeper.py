"""The leases one dispatcher holds, renewed while their deliveries are in flight.

Every third of the lease time one fenced statement renews them all (lease.py);
a lease missing from its answer has passed to another replica (this one was
frozen or cut off past its lease) and is dropped here, counted and logged. By
this process's clock a lease is fresh for the lease time after its claim or
its last renewal, whichever is later: a delivery that was not called yet when
its lease went stale is not called at all (another replica may have it).

A lease whose outcome is being recorded (`settling`) is still renewed, but one
missing from a renewal's answer is not called lost here: the outcome's own
fenced write may have just ended it (a renewal queued behind that write finds
the command no longer SENT), and that write says whether the lease was held.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection

import structlog

from ppos.controlplane.core.metrics import OUTBOX_FENCED
from ppos.controlplane.services.governance.outbox import lease as leases
from ppos.controlplane.services.governance.outbox.lease import Lease
from ppos.controlplane.storage.database import Database
from ppos.controlplane.storage.leases import DatabaseClock

_log = structlog.get_logger("ppos.governance.dispatcher")


class LeaseKeeper:
    def __init__(self, db: Database, owner: str, ttl: float, clock: DatabaseClock) -> None:
        self._db = db
        self._owner = owner
        self.ttl = ttl
        self._clock = clock
        self._held: dict[str, Lease] = {}
        self._settling: set[str] = set()  # command ids whose outcome is being recorded
        self._renewed_at = 0.0  # time.monotonic() of the last renewal that passed

    @property
    def held(self) -> list[Lease]:
        return list(self._held.values())

    def held_ids(self) -> Collection[str]:
        return self._held.keys()

    def hold(self, lease: Lease) -> None:
        self._held[lease.command_id] = lease

    def settling(self, lease: Lease) -> None:
        """The lease's outcome is being recorded: its write tells whether it was held."""
        if self._held.get(lease.command_id) is lease:
            self._settling.add(lease.command_id)

    def forget(self, lease: Lease) -> None:
        if self._held.get(lease.command_id) is lease:
            del self._held[lease.command_id]
            self._settling.discard(lease.command_id)

    def fresh(self, lease: Lease) -> bool:
        if self._held.get(lease.command_id) is not lease:
            return False
        since = max(lease.leased_at, self._renewed_at)
        return time.monotonic() - since < self.ttl

    async def run(self, stop: asyncio.Event) -> None:
        """Renew every third of the lease time until `stop`."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.ttl / 3)
            except TimeoutError:
                pass
            else:
                return
            try:
                await self.renew()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a database hiccup: the next renewal may pass
                _log.exception("dispatcher.renew_failed", held=len(self._held))

    async def renew(self) -> None:
        held = self.held
        if not held:
            return
        began, renewed = await self._db.write(
            lambda s: leases.renew(s, self._owner, held, self.ttl, self._clock)
        )
        self._renewed_at = began
        for lost in held:
            if lost.command_id in renewed or lost.command_id in self._settling:
                continue
            if self._held.get(lost.command_id) is lost:
                del self._held[lost.command_id]
                OUTBOX_FENCED.labels(write="renew").inc()
                _log.warning(
                    "dispatcher.lease_lost",
                    command_id=lost.command_id,
                    attempts=lost.attempts,
                    owner=self._owner,
                )

    async def release_all(self) -> None:
        """Hand every held lease back at once (a clean stop): another replica takes
        them at its next poll instead of after the lease time."""
        held = self.held
        if not held:
            return
        released = await self._db.write(lambda s: leases.release(s, self._owner, held, self._clock))
        self._held.clear()
        self._settling.clear()
        fenced = len(held) - len(released)
        if fenced:
            OUTBOX_FENCED.labels(write="release").inc(fenced)
        _log.info("dispatcher.leases_released", released=len(released), fenced=fenced)
