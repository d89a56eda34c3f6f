"""Fixtures of the token tests: a key ring and a clock changed by hand."""

from __future__ import annotations

import pytest

from tests.support.keys import HandClock, HandRing


@pytest.fixture
def ring() -> HandRing:
    return HandRing()


@pytest.fixture
def clock() -> HandClock:
    return HandClock()
