"""The last hour of a few numbers per region, for the overview's charts.

One point per `BUCKET_SECONDS`: a value recorded within the bucket of the last
point replaces it (the bucket shows its latest value), so a burst of changes costs
no memory and `POINTS` buckets always span the same hour, however busy the plane.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

BUCKET_SECONDS = 5.0
POINTS = 720  # an hour of buckets

Point = tuple[float, tuple[float, ...]]


class Series:
    """Per key (a region), a bounded list of (time, values) points."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.points: dict[str, deque[Point]] = {}

    def record(self, key: str, values: tuple[float, ...]) -> None:
        now = self.clock()
        points = self.points.setdefault(key, deque(maxlen=POINTS))
        if points and _bucket(points[-1][0]) == _bucket(now):
            points[-1] = (now, values)
        else:
            points.append((now, values))

    def since(self, key: str, seconds: float) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """The values at the start of the last `seconds` (the latest point before it,
        else the first inside it) and the latest values, or None with no point."""
        points = self.points.get(key)
        if not points:
            return None
        start = self.clock() - seconds
        base = points[0]
        for point in points:
            if point[0] >= start:
                break
            base = point
        return base[1], points[-1][1]

    def columns(self, key: str) -> tuple[list[float], list[list[float]]]:
        """The points as uPlot wants them: the times, then one list per value."""
        points = self.points.get(key, ())
        times = [round(t, 1) for t, _ in points]
        width = len(points[0][1]) if points else 0
        return times, [[values[i] for _, values in points] for i in range(width)]


def _bucket(moment: float) -> int:
    return int(moment // BUCKET_SECONDS)
