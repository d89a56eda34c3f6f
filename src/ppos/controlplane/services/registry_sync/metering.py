"""Token buckets on records/s and bytes/s, per region and over all regions.

A bucket may go into debt: a page is taken whole and the caller then waits
until the debt is paid back, so the long-run rate is the configured one
however large pages are, and a burst never exceeds the bucket's depth plus
one page. A rate of 0 means unmetered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


class TokenBucket:
    def __init__(
        self, rate: float, burst_seconds: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0:
            raise ValueError("a token bucket needs a positive rate")
        self.rate = rate
        self.capacity = rate * burst_seconds
        self._clock = clock
        self._level = self.capacity
        self._stamp = clock()
        self._lock = threading.Lock()

    def debit(self, amount: float) -> float:
        """Take `amount` tokens now; seconds to wait until the bucket is out of debt."""
        with self._lock:
            now = self._clock()
            self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
            self._stamp = now
            self._level -= amount
            return max(0.0, -self._level / self.rate)


@dataclass(frozen=True)
class Rates:
    records_per_second: float = 0.0
    bytes_per_second: float = 0.0
    region_records_per_second: float = 0.0
    region_bytes_per_second: float = 0.0
    burst_seconds: float = 1.0

    @property
    def metered(self) -> bool:
        return any(
            (
                self.records_per_second,
                self.bytes_per_second,
                self.region_records_per_second,
                self.region_bytes_per_second,
            )
        )


class Meter:
    """All the buckets of one process; `debit` says how long a page must wait."""

    def __init__(self, rates: Rates, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rates = rates
        self._clock = clock
        self._overall = self._pair(rates.records_per_second, rates.bytes_per_second)
        self._regions: dict[str, tuple[TokenBucket | None, TokenBucket | None]] = {}
        self._lock = threading.Lock()

    def _bucket(self, rate: float) -> TokenBucket | None:
        if rate <= 0:
            return None
        return TokenBucket(rate, self.rates.burst_seconds, clock=self._clock)

    def _pair(self, records: float, nbytes: float) -> tuple[TokenBucket | None, TokenBucket | None]:
        return (self._bucket(records), self._bucket(nbytes))

    def debit(self, region: str, records: int, nbytes: int) -> float:
        with self._lock:
            pair = self._regions.get(region)
            if pair is None:
                pair = self._pair(
                    self.rates.region_records_per_second, self.rates.region_bytes_per_second
                )
                self._regions[region] = pair
        wait = 0.0
        for records_bucket, bytes_bucket in (self._overall, pair):
            if records_bucket is not None:
                wait = max(wait, records_bucket.debit(records))
            if bytes_bucket is not None:
                wait = max(wait, bytes_bucket.debit(nbytes))
        return wait
