"""Sync lag: the age of the oldest change not yet synced, 0 when a region is caught up.

The registry contract tells how many changes remain after a page
(`remaining_changes`) but not when the first of them was committed. Every
unsynced change follows the synced ones in feed order, so it is no older than
the newest synced change: while changes remain, that change's commit time
stands for the oldest unsynced one (the lag is then at most that much).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from ppos.controlplane.core.metrics import SYNC_LAG_CHANGES, SYNC_LAG_SECONDS


def lag_seconds(lag_changes: int, newest_change_ns: int | None, now: float) -> float | None:
    """Lag at `now` (epoch seconds); None when changes remain and no synced change has a time."""
    if lag_changes <= 0:
        return 0.0
    if newest_change_ns is None:
        return None
    return max(0.0, now - newest_change_ns / 1e9)


@dataclass
class _RegionLag:
    changes: int = 0
    newest_change_ns: int | None = None


class LagGauges:
    """Publishes each region's lag metrics; the age gauge reads the clock when scraped."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._regions: dict[str, _RegionLag] = {}

    def publish(self, region: str, lag_changes: int, newest_change_ns: int | None) -> None:
        state = self._regions.get(region)
        if state is None:
            state = self._regions[region] = _RegionLag()
            SYNC_LAG_SECONDS.labels(region).set_function(lambda: self._seconds(state))
        state.changes = lag_changes
        if newest_change_ns is not None:
            state.newest_change_ns = newest_change_ns
        SYNC_LAG_CHANGES.labels(region).set(lag_changes)

    def caught_up(self, region: str) -> None:
        state = self._regions.get(region)
        self.publish(region, 0, state.newest_change_ns if state else None)

    def _seconds(self, state: _RegionLag) -> float:
        seconds = lag_seconds(state.changes, state.newest_change_ns, self._clock())
        return math.nan if seconds is None else seconds
