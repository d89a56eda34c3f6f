"""Timestamp conversion: the fast path gives exactly what protobuf's FromDatetime gives."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from google.protobuf import timestamp_pb2

from ppos.controlplane.core.timeutil import from_timestamp, to_timestamp

UTC = dt.UTC
FIRST = dt.datetime(1, 1, 1, tzinfo=UTC)
LAST = dt.datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)


def _reference(value: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


@pytest.mark.parametrize(
    "value",
    [
        FIRST,
        LAST,
        dt.datetime(1970, 1, 1, tzinfo=UTC),
        dt.datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),  # negative seconds
        dt.datetime(2026, 11, 28, 16, 18, 31, 123_456, tzinfo=UTC),
        dt.datetime(2026, 3, 29, 1, 30, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
        dt.datetime(2026, 3, 29, 1, 30, tzinfo=dt.timezone(-dt.timedelta(hours=11))),
        dt.datetime(2026, 3, 29, 1, 30, 0, 7),  # naive: local time, as astimezone reads it
    ],
)
def test_to_timestamp_matches_protobuf(value: dt.datetime) -> None:
    stamp = to_timestamp(value)
    assert stamp == _reference(value)
    assert stamp is not None
    assert 0 <= stamp.nanos < 1_000_000_000
    assert from_timestamp(stamp) == value.astimezone(UTC)


def test_to_timestamp_matches_protobuf_across_the_range() -> None:
    rng = random.Random(20261128)
    span = int((LAST - FIRST) / dt.timedelta(microseconds=1))
    for _ in range(20_000):
        value = FIRST + dt.timedelta(microseconds=rng.randrange(span))
        assert to_timestamp(value) == _reference(value), value


def test_to_timestamp_of_none_is_none() -> None:
    assert to_timestamp(None) is None
