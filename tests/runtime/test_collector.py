"""The collector settings a started server runs with."""

from __future__ import annotations

import gc

from ppos.controlplane.runtime.collector import THRESHOLDS, settle_collector


def test_settling_freezes_what_exists_and_raises_the_thresholds() -> None:
    before = gc.get_threshold()
    kept = [object() for _ in range(3)], {"a": [1, 2]}  # tracked containers, alive now
    gc.set_threshold(700, 10, 10)  # CPython's defaults (a server started earlier settled it)
    try:
        settle_collector()
        assert gc.get_threshold() == THRESHOLDS
        assert THRESHOLDS[0] > 700
        assert gc.get_freeze_count() >= len(kept)
        assert gc.is_tracked(kept[1])
    finally:
        gc.set_threshold(*before)
