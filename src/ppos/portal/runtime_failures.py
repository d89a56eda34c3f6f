"""Per region, how many of the jobs synced lately are FAILED_RUNTIME_ENVIRONMENT.

The plane reports no such rate, so the portal reads the synced jobs (no payloads)
in sync order, resuming after the last sequence it saw, and keeps the last
`window` seconds of them by their sync time. A portal that starts reads from the
beginning a few pages per evaluation (older jobs fall outside the window and are
only counted past); until it has caught up it reports nothing rather than a
rate over part of the window.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable

from ppos.portal.plane import OperatorClients
from ppos.preflight.v1 import job_pb2

PAGE = 1000
PAGES_PER_READ = 5  # bounds one evaluation's calls while catching up
FAILED = job_pb2.GOVERNANCE_STATE_FAILED_RUNTIME_ENVIRONMENT


class RuntimeFailureRate:
    def __init__(self, window: float, clock: Callable[[], float] = time.time) -> None:
        self.window = window
        self.clock = clock
        self.after = 0  # the last sync sequence read
        self.caught_up = False
        self._recent: deque[tuple[float, str, bool]] = deque()  # (sync time, region, failed)
        self._lock = threading.Lock()  # overview reads may run on two threads at once

    def read(self, clients: OperatorClients) -> dict[str, tuple[int, int]]:
        """Reads what was synced since the last call; per region (failed, synced)
        in the window, or nothing while catching up."""
        with self._lock:
            reply = clients.sync.list_jobs(
                after_sync_sequence=self.after,
                page_size=PAGE,
                limit=PAGE * PAGES_PER_READ,
                omit_payload=True,
            )
            start = self.clock() - self.window
            for job in reply.jobs:
                synced = job.sync_time.ToMilliseconds() / 1000
                if synced >= start:
                    failed = job.record.governance_state == FAILED
                    self._recent.append((synced, job.record.region, failed))
            self.after = max(self.after, reply.last_sync_sequence)
            self.caught_up = self.caught_up or not reply.has_more
            while self._recent and self._recent[0][0] < start:
                self._recent.popleft()
            if not self.caught_up:
                return {}
            failed_by: Counter[str] = Counter()
            synced_by: Counter[str] = Counter()
            for _, region, failed in self._recent:
                synced_by[region] += 1
                failed_by[region] += failed
            return {region: (failed_by[region], synced_by[region]) for region in synced_by}
