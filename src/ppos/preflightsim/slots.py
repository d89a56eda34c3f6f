"""Queue slots: how a simulated gateway runs a queue's jobs.

A queue has `capacity` slots. Jobs arrive with a priority (higher first) and
are admitted to a free slot by priority, then by arrival (FIFO within a
priority); the rest wait. A finished job frees its slot for the next waiting
one. A capacity change re-admits at once when it grows; when it shrinks,
running jobs are never stopped: they finish, and waiting jobs start only once
fewer than the new capacity run. PAUSED admits nothing (nothing is lost);
DRAINING admits nothing and accepts no new job; ACTIVE admits again.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

ACTIVE, PAUSED, DRAINING = "ACTIVE", "PAUSED", "DRAINING"


class QueueClosed(Exception):
    """The queue is draining: it takes no new job."""


@dataclass(order=True)
class _Waiting:
    rank: tuple[int, int]  # (-priority, arrival): the heap's order
    job_id: str = field(compare=False)
    priority: int = field(compare=False)


@dataclass
class QueueSlots:
    """One queue's slots: running jobs, and the jobs waiting for a slot."""

    capacity: int
    state: str = ACTIVE
    running: dict[str, int] = field(default_factory=dict)  # job id -> priority
    started: list[str] = field(default_factory=list)  # admission order, for tests and records
    _waiting: list[_Waiting] = field(default_factory=list)
    _arrivals: itertools.count[int] = field(default_factory=itertools.count)

    def submit(self, job_id: str, priority: int = 0) -> bool:
        """A job arrives; True if it got a slot now, False if it waits."""
        if job_id in self.running or any(w.job_id == job_id for w in self._waiting):
            return job_id in self.running  # the same job twice is one job
        if self.state == DRAINING:
            raise QueueClosed(f"queue is draining: job {job_id} not accepted")
        heapq.heappush(self._waiting, _Waiting((-priority, next(self._arrivals)), job_id, priority))
        self._admit()
        return job_id in self.running

    def finish(self, job_id: str) -> list[str]:
        """A running job ends; returns the jobs admitted to the freed slots."""
        self.running.pop(job_id, None)
        return self._admit()

    def apply(self, capacity: int, state: str) -> list[str]:
        """A new capacity or state; returns the jobs admitted by it."""
        self.capacity = capacity
        self.state = state
        return self._admit()

    @property
    def waiting(self) -> list[str]:
        """Waiting jobs in the order they will be admitted."""
        return [w.job_id for w in sorted(self._waiting)]

    def _admit(self) -> list[str]:
        admitted: list[str] = []
        while self.state == ACTIVE and self._waiting and len(self.running) < self.capacity:
            job = heapq.heappop(self._waiting)
            self.running[job.job_id] = job.priority
            self.started.append(job.job_id)
            admitted.append(job.job_id)
        return admitted
