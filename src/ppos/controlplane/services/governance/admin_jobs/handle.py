"""What a job kind sees of its run: progress, cancel requests, peer calls."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from ppos.controlplane.core.settings import ConfigError
from ppos.controlplane.security.principal import Principal
from ppos.controlplane.services.governance.admin_jobs.run_writes import Lease, RunWrites
from ppos.controlplane.services.governance.outbox.retry import TRANSIENT, backoff_seconds
from ppos.controlplane.services.governance.peers import PeerStubs

T = TypeVar("T")


class Cancelled(Exception):
    """The job was asked to stop; raised at a safe point."""


class JobFailed(Exception):
    """The job cannot go on, or found what it looked for wanting; the message says why.
    `result`, when given, is kept as the job's result all the same."""

    def __init__(self, message: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.result = result or {}


class HandedOver(Exception):
    """This replica is stopping: the job stops at a step boundary for another to resume."""


@dataclass(frozen=True)
class Snapshot:
    admin_job_id: str
    kind: str
    parameters: dict[str, str]
    checkpoint: str
    runs: int
    started_by: Principal
    request_id: str


class JobHandle:
    """What a job kind uses to report progress and reach its peers."""

    def __init__(
        self,
        snapshot: Snapshot,
        lease: Lease,
        *,
        writes: RunWrites,
        peers: PeerStubs,
        poll_interval: float,
        rng: random.Random,
        stopping: Callable[[], bool],
    ) -> None:
        self.snapshot = snapshot
        self.lease = lease
        self.job_id = snapshot.admin_job_id
        self.parameters = snapshot.parameters
        self.checkpoint: dict[str, Any] = (
            json.loads(snapshot.checkpoint) if snapshot.checkpoint else {}
        )
        self.peers = peers
        self.poll_interval = poll_interval
        self._writes = writes
        self._rng = rng
        self._stopping = stopping

    async def progress(
        self,
        *,
        done: int,
        total: int,
        message: str,
        checkpoint: dict[str, Any] | None = None,
    ) -> None:
        """Save progress (and the resume point); raises Cancelled if a cancel is pending."""
        if checkpoint is not None:
            self.checkpoint = checkpoint
        cancel = await self._writes.save(self.lease, done, total, message, self.checkpoint)
        if cancel:
            raise Cancelled(cancel)
        if self._stopping():
            raise HandedOver(self.job_id)

    async def cancel_requested(self) -> str:
        return await self._writes.cancel_reason(self.job_id)

    async def call(
        self,
        what: str,
        attempt: Callable[[], Awaitable[T]],
        *,
        pass_through: frozenset[grpc.StatusCode] = frozenset(),
    ) -> T:
        """Call a peer; transient failures are retried (held), the rest fail the job
        (except codes in `pass_through`, re-raised for the kind to judge)."""
        tries = 0
        while True:
            self._writes.hold(self.lease)
            try:
                return await attempt()
            except ConfigError as exc:
                raise JobFailed(f"{what}: {exc}") from None
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code in pass_through:
                    raise
                if code not in TRANSIENT:
                    raise JobFailed(f"{what}: {code.name}: {exc.details()}") from None
                tries += 1
                delay = backoff_seconds(tries, self.poll_interval, 30.0, self._rng)
                message = (
                    f"waiting: {what} answered {code.name} ({exc.details()}); "
                    f"retry {tries} in {delay:.1f}s"
                )
                await self._writes.note(self.lease, message)
                reason = await self.cancel_requested()
                if reason:
                    raise Cancelled(reason) from None
                await asyncio.sleep(delay)


JobKind = Callable[[JobHandle], Awaitable[dict[str, Any]]]
