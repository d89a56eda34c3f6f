"""Every sample record comes back through the RPC exactly as the source file holds it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import create_engine, select

from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as pb
from ppos.controlplane.services.registry_sync.models import SyncedJobRow
from ppos.preflight.v1 import job_pb2
from ppos.preflightsim.records import iter_lines
from tests.registry_sync.conftest import WorldFactory
from tests.registry_sync.test_record_files import independent_payload

REGION = "eu-west-1"


def source_payloads(paths: Sequence[Path]) -> list[tuple[str, int, bytes]]:
    """(job id, revision, exact payload bytes) of every line, read independently."""
    out = []
    for path in paths:
        for _, line in iter_lines(path):
            envelope = json.loads(line)
            out.append((envelope["jobId"], envelope.get("revision", 1), independent_payload(line)))
    return out


async def test_payloads_come_back_byte_for_byte(
    world: WorldFactory, odd_and_realistic: Sequence[Path], database_url: str
) -> None:
    w = await world({REGION: {"records": odd_and_realistic}})
    sweep = await w.sweep()
    expected = source_payloads(odd_and_realistic)
    assert sweep.state == pb.SWEEP_STATE_SUCCEEDED, sweep.error
    assert sweep.records_synced == len(expected)
    assert sweep.quarantined == 0
    assert sweep.bytes_synced == sum(len(p) for _, _, p in expected)
    sizes = sorted(len(p) for _, _, p in expected)
    assert sizes[0] <= 200
    assert sizes[-1] >= 2_000_000

    for job_id, revision, payload in expected:
        reply = await w.stub.GetSyncedJob(
            pb.GetSyncedJobRequest(region=REGION, job_id=job_id, revision=revision), metadata=w.md
        )
        record = reply.job.record
        assert record.canonical_payload == payload, job_id
        assert record.canonical_payload_sha256 == hashlib.sha256(payload).digest()
        assert reply.job.canonical_payload_size == len(payload)

    # The table holds the same bytes (stored as bytes, never re-serialised).
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            stored = {
                (row.job_id, row.revision): bytes(row.canonical_payload)
                for row in connection.execute(
                    select(
                        SyncedJobRow.job_id, SyncedJobRow.revision, SyncedJobRow.canonical_payload
                    )
                )
            }
    finally:
        engine.dispose()
    assert stored == {(j, r): p for j, r, p in expected}


async def test_read_back_matches_the_registry_record(
    world: WorldFactory, odd_and_realistic: Sequence[Path]
) -> None:
    w = await world({REGION: {"records": odd_and_realistic}})
    await w.sweep()
    feed = w.feed(REGION)
    jobs = await w.all_jobs()
    assert len(jobs) == len(feed)
    by_key = {(j.record.job_id, j.record.revision): j.record for j in jobs}
    for position in range(1, len(feed) + 1):
        source = feed.record(position)
        # Every field as the registry sent it, timestamps to the nanosecond.
        assert by_key[(source.job_id, source.revision)] == source


async def test_list_synced_jobs_pages_in_sync_order(
    world: WorldFactory, odd_and_realistic: Sequence[Path]
) -> None:
    w = await world({REGION: {"records": odd_and_realistic}})
    await w.sweep()
    everything = await w.all_jobs(omit_payload=True)
    sequences = [j.sync_sequence for j in everything]
    assert sequences == sorted(sequences)
    assert len(set(sequences)) == len(sequences)
    assert all(not j.record.canonical_payload for j in everything)
    assert all(len(j.record.canonical_payload_sha256) == 32 for j in everything)

    # Small pages, resumed after the last sequence seen, give the same rows.
    seen: list[int] = []
    after = 0
    while True:
        reply = await w.stub.ListSyncedJobs(
            pb.ListSyncedJobsRequest(after_sync_sequence=after, page_size=7), metadata=w.md
        )
        seen += [j.sync_sequence for j in reply.jobs]
        after = reply.last_sync_sequence
        if not reply.has_more:
            break
    assert seen == sequences

    # Payload pages stay under the 4 MiB a default client accepts (bar a single huge job).
    reply = await w.stub.ListSyncedJobs(pb.ListSyncedJobsRequest(page_size=1000), metadata=w.md)
    assert reply.has_more
    assert sum(len(j.record.canonical_payload) for j in reply.jobs) <= 3 * 1024 * 1024 or (
        len(reply.jobs) == 1
    )

    failed = await w.stub.ListSyncedJobs(
        pb.ListSyncedJobsRequest(
            governance_states=[job_pb2.GOVERNANCE_STATE_FAILED_RUNTIME_ENVIRONMENT],
            omit_payload=True,
            page_size=1000,
        ),
        metadata=w.md,
    )
    expected = [
        j.sync_sequence
        for j in everything
        if j.record.governance_state == job_pb2.GOVERNANCE_STATE_FAILED_RUNTIME_ENVIRONMENT
    ]
    assert [j.sync_sequence for j in failed.jobs] == expected
    assert expected
    assert all(j.record.node_id for j in failed.jobs)  # governance can act on the node


async def test_newest_revision_and_every_revision_are_kept(
    world: WorldFactory, odd_and_realistic: Sequence[Path]
) -> None:
    w = await world({REGION: {"records": odd_and_realistic}})
    await w.sweep()
    newest = await w.stub.GetSyncedJob(
        pb.GetSyncedJobRequest(region=REGION, job_id="fix_1779116603391"), metadata=w.md
    )
    assert newest.job.record.revision == 2
    first = await w.stub.GetSyncedJob(
        pb.GetSyncedJobRequest(region=REGION, job_id="fix_1779116603391", revision=1),
        metadata=w.md,
    )
    assert first.job.record.governance_state == job_pb2.GOVERNANCE_STATE_FAILED_RUNTIME_ENVIRONMENT
    assert first.job.record.canonical_payload.startswith(b"{\r\n")
    both = await w.stub.ListSyncedJobs(
        pb.ListSyncedJobsRequest(job_id="fix_1779116603391", omit_payload=True), metadata=w.md
    )
    assert [j.record.revision for j in both.jobs] == [1, 2]


async def test_a_second_sweep_changes_nothing(
    world: WorldFactory, odd_and_realistic: Sequence[Path]
) -> None:
    w = await world({REGION: {"records": odd_and_realistic}})
    await w.sweep()
    before = await w.all_jobs(omit_payload=True)
    status_before = await w.status(REGION)
    again = await w.sweep()
    assert again.state == pb.SWEEP_STATE_SUCCEEDED
    assert (again.records_synced, again.pages, again.quarantined) == (0, 0, 0)
    after = await w.all_jobs(omit_payload=True)
    assert [j.sync_sequence for j in after] == [j.sync_sequence for j in before]
    status = await w.status(REGION)
    assert status.cursor == status.head_cursor == status_before.cursor
    assert status.records_synced == len(before)
    assert status.lag_changes == 0
    assert status.last_error == ""
    assert status.last_success_time.ToDatetime() >= status_before.last_success_time.ToDatetime()
