"""pposctl's registry sync commands against a running demo: status, sweeps with
progress, cancelling, synced jobs with their payloads byte for byte, the
quarantine, and the status stream."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ppos.controlplane.cli.main import run
from ppos.controlplane.core.logging import SecretRegistry
from tests.ops.support import SignallingStream, operator_env, start_pposctl
from tests.ops.test_observability import metrics
from tests.ops.worlds import ODD_RECORDS, REGION, World, running_world
from tests.registry_sync.harness import ODD_SAMPLES


@pytest.fixture
async def world(
    database_url: str, tmp_path: Path, canary_token: str, secret_registry: SecretRegistry
) -> AsyncIterator[World]:
    """The demo's region: the odd engine outputs."""
    async for made in running_world(
        database_url,
        tmp_path,
        canary_token,
        secret_registry,
        sim_options={"records": [ODD_SAMPLES]},
    ):
        yield made


@pytest.fixture
async def slow_world(
    database_url: str, tmp_path: Path, canary_token: str, secret_registry: SecretRegistry
) -> AsyncIterator[World]:
    """Many records and a low sync rate: sweeps that last long enough to cancel."""
    async for made in running_world(
        database_url,
        tmp_path,
        canary_token,
        secret_registry,
        sim_options={"synthetic": 4000, "synthetic_size": 256},
        env={"PPOS_SYNC_RECORDS_PER_SECOND": "200", "PPOS_SYNC_PAGE_RECORDS": "50"},
    ):
        yield made


@pytest.fixture
async def big_world(
    database_url: str, tmp_path: Path, canary_token: str, secret_registry: SecretRegistry
) -> AsyncIterator[World]:
    """More synced revisions than one page of ListSyncedJobs (100) holds."""
    async for made in running_world(
        database_url,
        tmp_path,
        canary_token,
        secret_registry,
        sim_options={"synthetic": 250, "synthetic_size": 256},
    ):
        yield made


async def test_lists_merge_every_page_unless_limited(big_world: World) -> None:
    await big_world.synced()
    everything = await big_world.ctl("-o", "json", "sync", "jobs", "list")
    jobs = everything.json()["jobs"]
    assert len(jobs) == 250  # three pages of the server's, merged
    assert len({j["syncSequence"] for j in jobs}) == 250
    assert not everything.json().get("hasMore", False)
    table = await big_world.ctl("sync", "jobs", "list")
    assert len(table.lines()) == 251  # a header and every revision
    assert table.stderr == ""
    limited = await big_world.ctl("-o", "json", "sync", "jobs", "list", "--limit", "120")
    assert [j["syncSequence"] for j in limited.json()["jobs"]] == [
        j["syncSequence"] for j in jobs[:120]
    ]
    assert limited.json()["hasMore"] is True


async def _once_led(world: World) -> Any:
    """`sync status` once the scheduler has recorded its lead, which it takes as
    the plane starts, not before the plane answers."""
    for _ in range(100):
        status = await world.ctl("-o", "json", "sync", "status")
        assert status.code == 0, status.stderr
        if "leader" in status.json():
            return status
        await asyncio.sleep(0.1)
    raise AssertionError("the sync scheduler recorded no lead within 10 s")


async def test_sync_status_sweep_jobs_and_payloads(world: World, tmp_path: Path) -> None:
    before = await _once_led(world)
    (status,) = before.json()["statuses"]
    assert status["region"] == REGION
    assert before.json()["leader"]["name"] == "sync-leader"  # sync interval 0: still led
    assert not before.json()["leader"].get("expired", False)
    swept = await world.ctl("sync", "sweep", "start", REGION, "--poll", "50ms")
    assert swept.code == 0, swept.stderr
    assert swept.stdout.strip().endswith("succeeded")
    assert f"records={ODD_RECORDS}" in swept.stderr
    sweep_id = swept.stdout.split()[0].split("/")[1]
    listed = await world.ctl("sync", "sweep", "list", "--state", "succeeded", "-o", "name")
    assert listed.lines() == [f"sweep/{sweep_id}"]
    got = await world.ctl("-o", "json", "sync", "sweep", "get", sweep_id)
    assert got.json()["state"] == "SWEEP_STATE_SUCCEEDED"
    waited = await world.ctl("sync", "sweep", "wait", sweep_id)
    assert waited.code == 0
    one = await world.ctl("sync", "status", REGION)
    assert str(ODD_RECORDS) in one.lines()[1]
    assert one.lines()[0].split()[1:4] == ["LAG", "LAG", "AGE"]
    assert one.lines()[1].split()[1:3] == ["0", "0s"]  # caught up: no change waits

    fre = await world.ctl(
        "-o", "json", "sync", "jobs", "list", "--state", "failed-runtime-environment"
    )
    ids = sorted(j["record"]["jobId"] for j in fre.json()["jobs"])
    assert ids == ["fix_1779116603391", "job_1779116604100_bad01"]
    assert one.lines()[-1].startswith("leader: ")
    assert "(held; generation " in one.lines()[-1]
    wide = await world.ctl("-o", "wide", "sync", "status")
    assert wide.lines()[0].endswith("FAILED RUNTIME (15m)")
    synced = (await world.ctl("-o", "json", "sync", "status")).json()["statuses"][0]
    assert wide.lines()[1].endswith(f"{len(ids)}/{synced['recordsSynced']}")
    table = await world.ctl("sync", "jobs", "list", "--limit", "3")
    assert len(table.lines()) == 4
    assert "more rows follow: --after" in table.stderr

    everything = await world.ctl("-o", "json", "sync", "jobs", "list")
    assert len(everything.json()["jobs"]) == ODD_RECORDS
    one_job = await world.ctl("-o", "name", "sync", "jobs", "list", "--job", "fix_1779116603391")
    assert one_job.lines() == [f"job/{REGION}/fix_1779116603391@{rev}" for rev in (1, 2)]
    old = await world.ctl("-o", "name", "sync", "jobs", "list", "--job-id", "fix_1779116603391")
    assert old.lines() == one_job.lines()
    assert "warning: --job-id is deprecated; use --job" in old.stderr

    out = tmp_path / "payload.json"
    shown = await world.ctl(
        "sync", "jobs", "get", f"{REGION}/fix_1779116603391@1", "--payload-out", str(out)
    )
    assert shown.code == 0, shown.stderr
    assert shown.stderr.startswith("canonical payload written to")
    assert "(matches its digest;" in shown.stdout
    # The old spelling, REGION JOB --revision N, still works, with warnings.
    as_json = await world.ctl(
        "-o", "json", "sync", "jobs", "get", REGION, "fix_1779116603391", "--revision", "1"
    )
    assert "warning: --revision is deprecated; use REGION/JOB@REV" in as_json.stderr
    assert "warning: `sync jobs get REGION JOB` is deprecated" in as_json.stderr
    record = (
        as_json.json()["job"]["record"] if "job" in as_json.json() else as_json.json()["record"]
    )
    sent = base64.b64decode(record["canonicalPayload"])
    assert out.read_bytes() == sent  # byte for byte
    assert hashlib.sha256(sent).digest() == base64.b64decode(record["canonicalPayloadSha256"])
    newest = await world.ctl("-o", "json", "sync", "jobs", "get", f"{REGION}/fix_1779116603391")
    assert (newest.json().get("record") or newest.json()["job"]["record"])["revision"] == "2"
    named = await world.ctl(
        "-o", "json", "sync", "jobs", "get", f"job/{REGION}/fix_1779116603391@2"
    )
    assert named.stdout == newest.stdout  # what `-o name` prints names it too

    quarantine = await world.ctl("-o", "json", "sync", "quarantine", "list")
    assert quarantine.code == 0, quarantine.stderr
    missing = await world.ctl("sync", "status", "xx-nowhere-1")
    assert missing.code in (6, 9)


async def test_sweep_progress_bar_on_a_terminal(world: World) -> None:
    stderr = SignallingStream(terminal=True)
    stdout = io.StringIO()
    code = await asyncio.to_thread(
        run,
        ["sync", "sweep", "start", "--poll", "50ms"],
        environ=operator_env(world.plane),
        stdout=stdout,
        stderr=stderr,
    )
    assert code == 0
    screen = stderr.getvalue()
    assert "\x1b[" in screen
    assert "sweep eu-west-1" in screen
    assert "━" in screen  # the bar


async def test_sync_watch_follows_a_sweep(world: World) -> None:
    stream = SignallingStream()
    watch = start_pposctl(
        world.plane,
        "-o",
        "json",
        "sync",
        "watch",
        REGION,
        "--max-events",
        "2",
        "--duration",
        "60s",
        stdout=stream,
    )
    await asyncio.sleep(0.3)
    await world.synced()
    assert await asyncio.wait_for(watch, 60) == 0
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line]
    assert len(lines) == 2
    assert all(line["status"]["region"] == REGION for line in lines)


async def test_cancelling_a_sweep(slow_world: World) -> None:
    ctl = slow_world.ctl
    started = await ctl("-o", "json", "sync", "sweep", "start", "--detach")
    assert started.code == 0, started.stderr
    sweep_id = started.json()["sweepId"]
    cancelled = await ctl("sync", "sweep", "cancel", sweep_id)
    assert cancelled.code == 0, cancelled.stderr
    assert cancelled.stdout.startswith(f"sweep/{sweep_id} cancel requested")
    waited = await ctl("sync", "sweep", "wait", sweep_id, "--poll", "50ms")
    assert waited.code == 14  # it ended, but not by succeeding
    assert waited.stdout.strip() == f"sweep/{sweep_id} cancelled"
    cancelled_list = await ctl("sync", "sweep", "list", "--state", "cancelled", "-o", "name")
    assert cancelled_list.lines() == [f"sweep/{sweep_id}"]


async def test_sync_metrics_are_scraped_per_region(world: World) -> None:
    def sample(samples: dict, name: str) -> float:  # type: ignore[type-arg]
        return float(samples.get((name, (("region", REGION),)), 0.0))

    before = await metrics(world.plane)
    await world.synced()
    after = await metrics(world.plane)
    assert (
        sample(after, "ppos_sync_records_total") - sample(before, "ppos_sync_records_total")
        == ODD_RECORDS
    )
    assert sample(after, "ppos_sync_bytes_total") > sample(before, "ppos_sync_bytes_total")
    assert sample(after, "ppos_sync_lag_changes") == 0
    assert ("ppos_sync_lag_seconds", (("region", REGION),)) in after
    assert sample(after, "ppos_sync_lag_seconds") == 0
    assert sample(after, "ppos_sync_sweep_duration_seconds_count") > sample(
        before, "ppos_sync_sweep_duration_seconds_count"
    )
