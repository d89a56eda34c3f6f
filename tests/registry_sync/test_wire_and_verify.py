"""Pages are split record by record; each record is verified on its own."""

from __future__ import annotations

import hashlib
import random

import pytest

from ppos.controlplane.services.registry_sync import verify as v
from ppos.controlplane.services.registry_sync.backoff import Backoff
from ppos.controlplane.services.registry_sync.metering import Meter, Rates, TokenBucket
from ppos.controlplane.services.registry_sync.page_decoding import PageFormatError, parse_page
from ppos.preflight.v1 import job_pb2
from ppos.preflight.v1 import registry_service_pb2 as registry_pb
from ppos.preflightsim import samples
from ppos.preflightsim.faults import MALFORMED_KINDS, FaultPlan, FaultState, malformed
from ppos.preflightsim.feed import Feed, page_trailer

REGION = "eu-west-1"


@pytest.fixture(scope="module")
def feed() -> Feed:
    feed = Feed(REGION)
    feed.extend(samples.generate(region=REGION, count=12, size=500))
    return feed


def page_bytes(feed: Feed, wires: list[bytes], last: int) -> bytes:
    return b"".join(wires) + page_trailer(feed.cursor(last), last == len(feed), len(feed) - last)


def test_a_page_splits_into_the_exact_record_bytes(feed: Feed) -> None:
    entries = feed.page(0, 5, 1 << 20)
    data = page_bytes(feed, [e.wire for e in entries], 5)
    page = parse_page(data)
    # The generated parser agrees on every field.
    reference = registry_pb.ListJobChangesResponse.FromString(data)
    assert [r.SerializeToString() for r in reference.records] == page.records
    assert page.next_cursor == reference.next_cursor == feed.cursor(5)
    assert page.end_of_feed is False
    assert page.remaining_changes == reference.remaining_changes == 7
    last = parse_page(page_bytes(feed, [e.wire for e in feed.page(5, 50, 1 << 20)], 12))
    assert last.end_of_feed is True
    assert last.remaining_changes == 0
    assert len(last.records) == 7


def test_a_record_that_is_not_protobuf_does_not_spoil_its_page(feed: Feed) -> None:
    wires = [e.wire for e in feed.page(0, 3, 1 << 20)]
    wires[1] = malformed(wires[1], "garbage", REGION)
    page = parse_page(page_bytes(feed, wires, 3))
    results = [v.verify(raw, region=REGION, max_payload_bytes=1 << 20) for raw in page.records]
    assert [type(r).__name__ for r in results] == ["Accepted", "Rejected", "Accepted"]
    assert results[1].reason == v.INVALID_ENVELOPE
    assert results[1].raw == page.records[1]


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16_383, 16_384, (1 << 21) - 1, 1 << 21])
def test_records_of_every_length_width_split_into_their_exact_bytes(size: int) -> None:
    # Lengths of one to four varint bytes: the parser reads up to three inline.
    records = [bytes([n + 1]) * size for n in range(3)]
    data = b"".join(b"\x0a" + _varint(len(r)) + r for r in records) + b"\x12\x01c"
    page = parse_page(data)
    assert page.records == records
    assert page.next_cursor == "c"
    assert page.wire_size == len(data)


def test_a_record_length_in_more_bytes_than_needed_reads_as_its_value() -> None:
    # 0x85 0x80 0x00 is 5 in three bytes: protobuf parsers accept it, and so does this one.
    data = b"\x0a\x85\x80\x00abcde" + b"\x0a\x83\x00xyz"
    assert parse_page(data).records == [b"abcde", b"xyz"]


@pytest.mark.parametrize(
    "data",
    [b"\x0a\x05abc", b"\x0a", b"\x00\x01", b"\x0f\x00", b"\x12\x02\xff\xfe"],
)
def test_a_broken_page_is_refused_as_a_whole(data: bytes) -> None:
    with pytest.raises(PageFormatError):
        parse_page(data)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("garbage", v.INVALID_ENVELOPE),
        ("bad_utf8", v.INVALID_ENVELOPE),
        ("no_job_id", v.INVALID_ENVELOPE),
        ("bad_revision", v.INVALID_ENVELOPE),
        ("short_digest", v.INVALID_ENVELOPE),
        ("no_cursor", v.INVALID_ENVELOPE),
        ("wrong_region", v.REGION_MISMATCH),
    ],
)
def test_each_malformed_kind_is_rejected(feed: Feed, kind: str, reason: str) -> None:
    raw = parse_page(malformed(feed.entry(1).wire, kind, REGION)).records[0]
    result = v.verify(raw, region=REGION, max_payload_bytes=1 << 20)
    assert isinstance(result, v.Rejected)
    assert result.reason == reason
    assert result.detail


def test_every_malformed_kind_is_covered() -> None:
    assert set(MALFORMED_KINDS) == {
        "garbage",
        "bad_utf8",
        "no_job_id",
        "bad_revision",
        "short_digest",
        "wrong_region",
        "no_cursor",
    }


def test_digest_and_size_are_checked(feed: Feed) -> None:
    state = FaultState(FaultPlan(wrong_digest_at=frozenset({1})))
    wire = state.page_wires([feed.entry(1)], None, REGION)[0]
    raw = parse_page(wire).records[0]
    wrong = v.verify(raw, region=REGION, max_payload_bytes=1 << 20)
    assert isinstance(wrong, v.Rejected)
    assert wrong.reason == v.DIGEST_MISMATCH
    good = parse_page(feed.entry(1).wire).records[0]
    small = v.verify(good, region=REGION, max_payload_bytes=10)
    assert isinstance(small, v.Rejected)
    assert small.reason == v.PAYLOAD_TOO_LARGE
    accepted = v.verify(good, region=REGION, max_payload_bytes=1 << 20)
    assert isinstance(accepted, v.Accepted)
    assert hashlib.sha256(accepted.payload).digest() == accepted.digest


def test_unknown_enum_values_survive() -> None:
    payload = b"{}"
    record = job_pb2.JobRecord(
        job_id="job_1_00001",
        region=REGION,
        revision=1,
        cursor="c.1",
        canonical_payload=payload,
        canonical_payload_sha256=hashlib.sha256(payload).digest(),
    )
    record.status = 42  # type: ignore[assignment]  # a value a newer registry may send
    result = v.verify(record.SerializeToString(), region=REGION, max_payload_bytes=100)
    assert isinstance(result, v.Accepted)
    assert result.status == "42"
    assert v.enum_value(job_pb2.JobStatus, result.status) == 42
    assert v.enum_value(job_pb2.GovernanceState, result.governance_state) == 0


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_holds_its_rate_with_pages_of_any_size() -> None:
    clock = FakeClock()
    bucket = TokenBucket(100.0, 1.0, clock=clock)
    assert bucket.debit(100) == 0  # the burst
    waited = 0.0
    for size in [37, 250, 1, 99, 613] * 4:
        wait = bucket.debit(size)
        clock.now += wait
        waited += wait
    total = sum([37, 250, 1, 99, 613] * 4)
    assert waited == pytest.approx(total / 100.0)


def test_meter_takes_the_slowest_of_overall_and_region_buckets() -> None:
    clock = FakeClock()
    meter = Meter(
        Rates(
            records_per_second=1000,
            bytes_per_second=1e6,
            region_records_per_second=10,
            burst_seconds=0.0001,
        ),
        clock=clock,
    )
    assert meter.debit("a", 20, 100) == pytest.approx(2.0, rel=1e-3)  # region records bound
    assert meter.debit("b", 1, 3_000_000) == pytest.approx(3.0, rel=1e-3)  # overall bytes bound
    assert Meter(Rates()).debit("a", 10**9, 10**12) == 0  # unmetered


def test_backoff_is_jittered_exponential_and_capped() -> None:
    rng = random.Random(7)
    backoff = Backoff(0.1, 2.0, 8, random=rng.random)
    for retry in range(8):
        ceiling = min(2.0, 0.1 * 2**retry)
        delays = [backoff.delay(retry) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8
        assert min(delays) < ceiling * 0.2
    assert backoff.delay(0, hint=1.5) == 1.5  # the server's RetryInfo is honoured
    assert backoff.delay(0, hint=60) == 2.0  # within the cap
