"""Every injected fault: the sweep finishes or resumes, corrupted records are
quarantined exactly as many as injected (with the bytes received), nothing
else is lost and nothing is stored twice."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from prometheus_client import REGISTRY

from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as pb
from ppos.preflightsim.faults import FaultPlan, FaultState, malformed
from ppos.preflightsim.feed import unframe
from tests.registry_sync.conftest import WorldFactory
from tests.registry_sync.harness import SyncWorld, digest, feed_records, write_faults

CORRUPT = "eu-west-1"
SHUFFLED = "us-east-1"
MALFORMED = {
    5: "garbage",
    14: "bad_utf8",
    23: "no_job_id",
    31: "bad_revision",
    42: "short_digest",
    50: "wrong_region",
    61: "no_cursor",
}
WRONG_DIGEST = (3, 57)
REPEATED = (8, 10, 70)
CONFLICT = (90,)


ERROR_KINDS = [
    (CORRUPT, "UNAVAILABLE"),
    (CORRUPT, "DEADLINE_EXCEEDED"),
    (SHUFFLED, "UNAVAILABLE"),
]


def errors(region: str, kind: str) -> float:
    value = REGISTRY.get_sample_value("ppos_sync_errors_total", {"region": region, "kind": kind})
    return value or 0.0


def _positions(values: tuple[int, ...] | dict[int, str]) -> str:
    if isinstance(values, dict):
        return ",".join(f"{p}:{k}" for p, k in values.items())
    return ",".join(str(p) for p in values)


async def assert_mirror(
    w: SyncWorld,
    region: str,
    *,
    missing: set[int] = frozenset(),  # type: ignore[assignment]
) -> None:
    """Every source record except `missing` positions is stored once, with its digest."""
    feed = w.feed(region)
    jobs = await w.all_jobs(region)
    keys = [(j.record.job_id, j.record.revision) for j in jobs]
    assert len(keys) == len(set(keys)), "a revision stored twice"
    stored = {key: j.record for key, j in zip(keys, jobs, strict=True)}
    expected = {
        (r.job_id, r.revision): r
        for position, r in enumerate(feed_records(feed), start=1)
        if position not in missing
    }
    assert set(stored) == set(expected)
    for key, record in expected.items():
        assert stored[key].canonical_payload == record.canonical_payload
        assert stored[key].canonical_payload_sha256 == digest(record.canonical_payload)
    status = await w.status(region)
    assert status.cursor == feed.head_cursor == status.head_cursor


async def test_corrupt_repeated_and_reordered_records(world: WorldFactory) -> None:
    w = await world(
        {
            CORRUPT: {
                "synthetic": 120,
                "synthetic_size": 600,
                "extra": [
                    "--fault-malformed-at",
                    _positions(MALFORMED),
                    "--fault-wrong-digest-at",
                    _positions(WRONG_DIGEST),
                    "--fault-repeat-at",
                    _positions(REPEATED),
                    "--fault-conflict-at",
                    _positions(CONFLICT),
                ],
            },
            SHUFFLED: {
                "synthetic": 90,
                "synthetic_size": 600,
                "extra": ["--fault-reorder", "--fault-overlap", "--fault-repeat-at", "4,44"],
            },
        },
        env={"PPOS_SYNC_PAGE_RECORDS": "10"},
    )
    sweep = await w.sweep()
    assert sweep.state == pb.SWEEP_STATE_SUCCEEDED, sweep.error
    parts = {p.region: p for p in sweep.region_progress}

    # Corrupted records: quarantined once each, with the bytes as sent, nothing else lost.
    corrupted = set(MALFORMED) | set(WRONG_DIGEST)
    await assert_mirror(w, CORRUPT, missing=corrupted)
    quarantine = await w.quarantine(CORRUPT)
    reasons = Counter(q.reason for q in quarantine)
    assert reasons == {
        "INVALID_ENVELOPE": 6,
        "REGION_MISMATCH": 1,
        "DIGEST_MISMATCH": 2,
        "REVISION_CONFLICT": 1,
    }
    assert parts[CORRUPT].quarantined == len(quarantine) == 10
    assert parts[CORRUPT].duplicates_skipped == len(REPEATED)
    assert parts[CORRUPT].records_synced == 120 - len(corrupted)
    feed = w.feed(CORRUPT)
    plan = FaultPlan(wrong_digest_at=frozenset(WRONG_DIGEST), conflict_at=frozenset(CONFLICT))
    sent = {unframe(malformed(feed.entry(p).wire, kind, CORRUPT)) for p, kind in MALFORMED.items()}
    for position in WRONG_DIGEST:
        sent.add(unframe(FaultState(plan).page_wires([feed.entry(position)], None, CORRUPT)[0]))
    conflicting = FaultState(plan).page_wires([feed.entry(CONFLICT[0])], None, CORRUPT)[1]
    sent.add(unframe(conflicting))
    assert {q.raw_record for q in quarantine} == sent
    for q in quarantine:
        assert q.raw_record_sha256 == digest(q.raw_record)
        assert q.detail
        assert q.sweep_id == sweep.sweep_id
        assert q.source_cursor
    conflict = next(q for q in quarantine if q.reason == "REVISION_CONFLICT")
    kept = feed.record(CONFLICT[0])
    assert (conflict.job_id, conflict.revision) == (kept.job_id, kept.revision)
    status = await w.status(CORRUPT)
    assert status.quarantined_count == 10
    assert status.duplicates_skipped == len(REPEATED)

    # Reordered, overlapping, repeated pages: everything once.
    await assert_mirror(w, SHUFFLED)
    assert await w.quarantine(SHUFFLED) == []
    shuffled = parts[SHUFFLED]
    assert shuffled.records_synced == 90
    # Each page after the first starts with the previous page's last record.
    assert shuffled.duplicates_skipped == 2 + (shuffled.pages - 1)

    # A second sweep receives nothing new and quarantines nothing more.
    again = await w.sweep()
    assert (again.records_synced, again.quarantined) == (0, 0)
    assert len(await w.quarantine()) == 10


async def test_outages_slow_answers_and_dropped_connections(world: WorldFactory) -> None:
    w = await world(
        {
            CORRUPT: {
                "synthetic": 200,
                "synthetic_size": 700,
                "extra": [
                    "--fault-unavailable",
                    "3",
                    "--fault-slow",
                    "2",
                    "--fault-slow-seconds",
                    "1",
                ],
            },
            SHUFFLED: {
                "synthetic": 200,
                "synthetic_size": 700,
                "extra": ["--fault-proxy", "--fault-drop", "3", "--fault-reorder"],
            },
        },
        env={
            "PPOS_SYNC_PAGE_RECORDS": "20",
            "PPOS_SYNC_CALL_TIMEOUT": "400ms",
            "PPOS_SYNC_RETRY_ATTEMPTS": "10",
        },
    )
    before = {key: errors(*key) for key in ERROR_KINDS}
    sweep = await w.sweep()
    assert sweep.state == pb.SWEEP_STATE_SUCCEEDED, sweep.error
    seen = {key: errors(*key) - before[key] for key in ERROR_KINDS}
    assert seen[(CORRUPT, "UNAVAILABLE")] == 3
    assert seen[(CORRUPT, "DEADLINE_EXCEEDED")] == 2
    assert seen[(SHUFFLED, "UNAVAILABLE")] >= 3  # each drop cut a call mid-page
    assert w.sims[CORRUPT].registry.faults.injected == {"unavailable": 3, "slow": 2}
    assert w.sims[SHUFFLED].registry.faults.injected["drop"] == 3
    for region in (CORRUPT, SHUFFLED):
        await assert_mirror(w, region)
        assert await w.quarantine(region) == []
    assert sweep.records_synced == 400


async def test_retries_run_out_then_the_next_sweep_resumes(
    world: WorldFactory, tmp_path: Path
) -> None:
    faults = tmp_path / "faults.json"
    write_faults(faults, {})
    w = await world(
        {CORRUPT: {"synthetic": 100, "synthetic_size": 600, "extra": ["--faults", str(faults)]}},
        env={
            "PPOS_SYNC_PAGE_RECORDS": "10",
            "PPOS_SYNC_RETRY_ATTEMPTS": "3",
            "PPOS_SYNC_REGION_RECORDS_PER_SECOND": "150",
            "PPOS_SYNC_BURST": "100ms",
        },
    )
    started = await w.start_sweep()
    await w.wait_status(CORRUPT, lambda s: s.pages_committed >= 2)
    write_faults(faults, {"unavailable": 1000})
    failed = await w.wait_sweep(started.sweep_id)
    assert failed.state == pb.SWEEP_STATE_FAILED
    assert "UNAVAILABLE" in failed.error
    assert CORRUPT in failed.error
    status = await w.status(CORRUPT)
    assert "UNAVAILABLE" in status.last_error
    assert not status.sweeping
    held = await w.all_jobs(CORRUPT, omit_payload=True)
    assert 20 <= len(held) < 100
    # The cursor sits exactly after what was committed.
    assert status.cursor == w.feed(CORRUPT).cursor(len(held))

    write_faults(faults, {})
    resumed = await w.sweep()
    assert resumed.state == pb.SWEEP_STATE_SUCCEEDED
    assert resumed.records_synced == 100 - len(held)
    await assert_mirror(w, CORRUPT)
    status = await w.status(CORRUPT)
    assert status.last_error == ""
    assert status.records_synced == 100


async def test_a_registry_that_is_down_fails_the_region_not_the_others(
    world: WorldFactory,
) -> None:
    w = await world(
        {
            CORRUPT: {"synthetic": 30, "synthetic_size": 500},
            SHUFFLED: {"synthetic": 30, "synthetic_size": 500},
        },
        env={"PPOS_SYNC_RETRY_ATTEMPTS": "2"},
    )
    await w.sims[SHUFFLED].stop(0)
    sweep = await w.sweep()
    parts = {p.region: p for p in sweep.region_progress}
    assert sweep.state == pb.SWEEP_STATE_FAILED
    assert parts[CORRUPT].state == pb.SWEEP_STATE_SUCCEEDED
    assert parts[SHUFFLED].state == pb.SWEEP_STATE_FAILED
    assert "GetRegistryInfo: UNAVAILABLE" in parts[SHUFFLED].error
    await assert_mirror(w, CORRUPT)
    assert (await w.status(SHUFFLED)).records_synced == 0
