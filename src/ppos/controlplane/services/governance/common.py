"""What every part of governance shares: its name, the write retry, audit, versions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.storage import audit
from ppos.controlplane.storage.database import Database

SERVICE = "governance"
GOVERNANCE_SERVICE = "/ppos.controlplane.governance.v1.GovernanceService/"
T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]


async def write_once(db: Database, work: Callable[[Session], T]) -> T:
    """Run `work` in a write transaction; on a unique-key race, run it once more.

    Two concurrent calls that both pass their existence checks (two creates of
    one id, two provisionings under one request id) meet at a unique key; the
    loser runs again and now sees the winner's row, so it answers the way it
    would have had it come second: a replay, or ALREADY_EXISTS.
    """
    try:
        return await db.write(work)
    except IntegrityError:
        return await db.write(work)


def record_change(
    session: Session, kind: str, resource_id: str, before: Any, after: Any, **extra: Any
) -> None:
    """The audit entry of one change, in the change's own transaction."""
    audit.record(
        session,
        service=SERVICE,
        resource_kind=kind,
        resource_id=resource_id,
        before=before,
        after=after,
        **extra,
    )


def bump(row: Any, *, spec: bool) -> None:
    row.resource_version += 1
    if spec:
        row.generation += 1
    row.updated_at = utcnow()


async def wait_either(first: asyncio.Event, second: asyncio.Event) -> None:
    """Return when either event is set."""
    waiters = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds`; True when `stop` was set (the server is shutting down)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
    return stop.is_set()
