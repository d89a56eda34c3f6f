"""The simulated registry's `--release-every`: records arrive over time, and a
cursor beyond what has been released is refused like one beyond the head."""

from __future__ import annotations

import time

import pytest

from ppos.preflightsim import samples
from ppos.preflightsim.faults import FaultPlan, FaultState
from ppos.preflightsim.feed import CursorError, Feed
from ppos.preflightsim.registry import RegistrySimulator


def test_records_are_released_over_time() -> None:
    feed = Feed("eu-west-1")
    feed.extend(samples.generate(region="eu-west-1", count=10, size=300))
    simulator = RegistrySimulator(feed, FaultState(FaultPlan(), None), release=(2, 0.2, 3))
    assert (len(feed), feed.loaded) == (2, 10)
    assert [e.position for e in feed.page(0, 100, 1 << 20)] == [1, 2]
    with pytest.raises(CursorError):
        feed.position_of(feed.cursor(3))
    time.sleep(0.25)
    simulator._count("ListJobChanges")  # every call looks at the clock first
    assert len(feed) == 5
    assert feed.head_cursor == feed.cursor(5)
    time.sleep(0.8)
    simulator._count("ListJobChanges")
    assert len(feed) == 10  # never more than were loaded
