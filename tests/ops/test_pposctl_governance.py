"""pposctl's governance commands against a running demo: tenants, queues,
partners, routes, policies with dry runs, decisions citing synced jobs, the
outbox delivering to the simulated gateway, admin jobs with progress, and the
audit log."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ppos.controlplane.cli.main import run
from ppos.controlplane.core.logging import SecretRegistry
from tests.governance.conftest import FAST as FAST_GOVERNANCE
from tests.ops.support import Result, SignallingStream, operator_env, pposctl, start_pposctl
from tests.ops.worlds import REGION, World, running_world
from tests.registry_sync.harness import ODD_SAMPLES
from tests.support.operators import add_operator


@pytest.fixture
async def world(
    database_url: str, tmp_path: Path, canary_token: str, secret_registry: SecretRegistry
) -> AsyncIterator[World]:
    """The demo's region, whose gateway refuses the first command it gets (so one
    outbox command fails and can be retried)."""
    async for made in running_world(
        database_url,
        tmp_path,
        canary_token,
        secret_registry,
        sim_options={"records": [ODD_SAMPLES], "extra": ["--gateway-refuse-first", "1"]},
        env=FAST_GOVERNANCE,
    ):
        yield made


@pytest.fixture
async def slow_world(
    database_url: str, tmp_path: Path, canary_token: str, secret_registry: SecretRegistry
) -> AsyncIterator[World]:
    """Many records and a low sync rate: admin jobs that last long enough to cancel."""
    async for made in running_world(
        database_url,
        tmp_path,
        canary_token,
        secret_registry,
        sim_options={"synthetic": 4000, "synthetic_size": 256},
        env={
            **FAST_GOVERNANCE,
            "PPOS_SYNC_RECORDS_PER_SECOND": "200",
            "PPOS_SYNC_PAGE_RECORDS": "50",
        },
    ):
        yield made


async def test_tenants_queues_partners_routes(world: World, tmp_path: Path) -> None:
    ctl = world.ctl
    made = await ctl(
        "partners",
        "create",
        "printhaus",
        "--display-name",
        "Printhaus",
        "--region",
        REGION,
        "--accepts-review",
    )
    assert made.code == 0, made.stderr
    assert (await ctl("partners", "list", "-o", "name")).lines() == ["partner/printhaus"]
    provisioned = await ctl(
        "tenants",
        "provision",
        "acme",
        "--display-name",
        "ACME Print",
        "--default-region",
        REGION,
        "--queue",
        f"standard:{REGION}:20",
        "--queue",
        f"rush:{REGION}:5:10",
        "-l",
        "tier=gold",
        "--request-id",
        "prov-acme-1",
    )
    assert provisioned.code == 0, provisioned.stderr
    assert "tenant/acme provisioned" in provisioned.stdout
    assert "queue/acme/rush provisioned" in provisioned.stdout
    replay = await ctl(
        "tenants",
        "provision",
        "acme",
        "--display-name",
        "ACME Print",
        "--default-region",
        REGION,
        "--queue",
        f"standard:{REGION}:20",
        "--queue",
        f"rush:{REGION}:5:10",
        "-l",
        "tier=gold",
        "--request-id",
        "prov-acme-1",
    )
    assert replay.code == 0, replay.stderr
    assert "unchanged (request id replayed)" in replay.stdout
    request = {
        "tenantId": "beta",
        "spec": {"displayName": "Beta", "defaultRegion": REGION},
        "queues": [{"queueId": "main", "spec": {"region": REGION, "capacity": 3}}],
    }
    spec_file = tmp_path / "beta.json"
    spec_file.write_text(json.dumps(request))
    from_file = await ctl("tenants", "provision", "-f", str(spec_file))
    assert from_file.code == 0, from_file.stderr
    listed = await ctl("tenants", "list", "-l", "tier=gold", "-o", "name")
    assert listed.lines() == ["tenant/acme"]
    bad = await ctl(
        "tenants", "provision", "Not_Valid", "--display-name", "x", "--default-region", REGION
    )
    assert bad.code == 9

    updated = await ctl("-o", "json", "tenants", "update", "acme", "--display-name", "ACME")
    assert updated.json()["spec"]["displayName"] == "ACME"
    assert (await ctl("tenants", "suspend", "acme", "--reason", "unpaid")).code == 0
    assert "SUSPENDED" in (await ctl("tenants", "get", "acme")).stdout
    assert (await ctl("tenants", "resume", "acme")).code == 0
    assert (await ctl("tenants", "retire", "beta", "--reason", "left")).code == 0

    queues = await ctl("queues", "list", "--tenant", "acme", "-o", "name")
    assert sorted(queues.lines()) == ["queue/acme/rush", "queue/acme/standard"]
    created = await ctl("queues", "create", "acme/bulk", "--region", REGION, "--capacity", "8")
    assert created.code == 0, created.stderr
    version = (await ctl("-o", "json", "queues", "get", "acme/bulk")).json()["meta"][
        "resourceVersion"
    ]
    resized = await ctl("queues", "resize", "acme/bulk", "--capacity", "16", "--reason", "peak")
    assert resized.stdout.strip() == "queue/acme/bulk resized to 16"
    assert resized.stderr == ""
    # The old spelling (the capacity as an argument) still works, with a warning.
    stale = await ctl(
        "queues", "resize", "acme/bulk", "4", "--reason", "x", "--expected-version", version
    )
    assert stale.code == 8
    assert "warning: the capacity as an argument is deprecated; use --capacity 4" in stale.stderr
    assert (await ctl("queues", "resize", "acme/bulk", "--reason", "x")).code == 1
    assert "16" in (await ctl("queues", "get", "acme/bulk")).stdout
    for verb in ("pause", "drain"):
        done = await ctl("queues", verb, "acme/bulk", "--reason", "maintenance")
        assert done.code == 0, done.stderr
    assert (await ctl("queues", "resume", "acme/bulk")).code == 0
    assert (await ctl("queues", "get", "acme/nope")).code == 6
    assert (await ctl("queues", "get", "no-slash")).code == 1

    route = await ctl(
        "routes",
        "create",
        "acme-review",
        "--tenant",
        "acme",
        "--partner",
        "printhaus",
        "--when-state",
        "completed-with-findings",
    )
    assert route.code == 0, route.stderr
    shown = await ctl("routes", "get", "acme-review")
    assert "COMPLETED_WITH_FINDINGS" in shown.stdout
    changed = await ctl("-o", "json", "routes", "update", "acme-review", "--priority", "5")
    assert changed.json()["spec"]["priority"] == 5
    assert (await ctl("routes", "list", "--tenant", "acme", "-o", "name")).lines() == [
        "route/acme-review"
    ]
    deleted = await ctl("routes", "delete", "acme-review", "--reason", "partner left")
    assert deleted.code == 0, deleted.stderr
    assert (await ctl("routes", "get", "acme-review")).code == 6
    audited = await ctl("audit", "list", "--kind", "route")
    assert audited.lines()[0].split()[:6] == ["ID", "TIME", "ACTOR", "METHOD", "RESOURCE", "REASON"]
    (deletion,) = [line for line in audited.lines() if "DeletePartnerRoute" in line]
    assert "route/acme-review" in deletion
    assert "partner left" in deletion
    as_json = await ctl("-o", "json", "audit", "list", "--kind", "route")
    reasons = [e.get("reason", "") for e in as_json.json()["entries"]]
    assert reasons[-1] == "partner left"


async def test_policies_enable_says_how_many_synced_jobs_it_will_act_on(world: World) -> None:
    ctl = world.ctl
    await world.synced()
    created = await ctl(
        "policies", "set", "fre-late", "--trigger", "failed-runtime-environment",
        "--action", "retry-job", "--disabled",
    )  # fmt: skip
    assert created.code == 0, created.stderr
    for _ in range(300):  # until the reconciler has passed the synced jobs (deciding none)
        dry = await ctl("-o", "json", "policies", "dry-run", "fre-late")
        if dry.json().get("backfillJobs") == 2:
            break
        await asyncio.sleep(0.05)
    assert dry.json()["backfillJobs"] == 2, dry.stdout
    asked = await ctl("policies", "enable", "fre-late")  # no terminal to ask at
    assert asked.code != 0
    assert "will act on 2 already-synced job(s)" in asked.stderr
    assert "--yes" in asked.stderr
    assert "dry-run only" in (await ctl("policies", "get", "fre-late")).stdout
    enabled = await ctl("policies", "enable", "fre-late", "--yes")
    assert enabled.code == 0, enabled.stderr
    assert "will act on 2 already-synced job(s)" in enabled.stderr
    assert enabled.stdout.strip() == "policy/fre-late enabled"
    for _ in range(300):  # the jobs synced before the policy was enabled are decided
        made = await ctl("-o", "json", "decisions", "list", "--policy", "fre-late")
        if len(made.json().get("decisions", [])) == 2:
            break
        await asyncio.sleep(0.05)
    assert sorted(d["job"]["jobId"] for d in made.json()["decisions"]) == [
        "fix_1779116603391",
        "job_1779116604100_bad01",
    ]


async def test_policies_dry_run_decisions_and_outbox(world: World) -> None:
    ctl = world.ctl
    created = await ctl(
        "policies",
        "set",
        "fre-recovery",
        "--trigger",
        "failed-runtime-environment",
        "--action",
        "retry-job",
        "--disabled",
    )
    assert created.code == 0, created.stderr
    assert created.stdout.strip() == "policy/fre-recovery created"
    assert "dry-run only" in (await ctl("policies", "list")).stdout
    enabled = await ctl("policies", "apply", "fre-recovery", "--enabled")
    assert enabled.stdout.strip() == "policy/fre-recovery configured"
    assert "retry-job" in (await ctl("policies", "get", "fre-recovery")).stdout
    await world.synced()  # the reconciler decides on what this sweep brings

    for _ in range(300):  # the reconciler acts on its own schedule
        made = await ctl("-o", "json", "decisions", "list", "--policy", "fre-recovery")
        if len(made.json().get("decisions", [])) == 2:
            break
        await asyncio.sleep(0.05)
    decisions = made.json()["decisions"]
    assert sorted(d["job"]["jobId"] for d in decisions) == [
        "fix_1779116603391",
        "job_1779116604100_bad01",
    ]
    for decision in decisions:  # each cites the synced record it came from
        assert decision["governanceState"] == "GOVERNANCE_STATE_FAILED_RUNTIME_ENVIRONMENT"
        assert decision["canonicalPayloadSha256"]
    table = await ctl("decisions", "list", "--job", "fix_1779116603391")
    assert "eu-west-1/fix_1779116603391@1" in table.stdout
    # A job as pposctl prints it (REGION/JOB) filters the same way.
    named = await ctl("decisions", "list", "--job", "eu-west-1/fix_1779116603391")
    assert named.stdout == table.stdout
    elsewhere = await ctl("decisions", "list", "--job", "us-east-1/fix_1779116603391")
    assert elsewhere.stdout == ""

    def states(listing: Result) -> list[str]:
        return sorted(c["state"] for c in listing.json().get("commands", []))

    for _ in range(300):  # the outbox delivers to the simulated gateway, which refuses one
        listing = await ctl("-o", "json", "outbox", "list")
        if states(listing) == ["COMMAND_STATE_ACKNOWLEDGED", "COMMAND_STATE_FAILED"]:
            break
        await asyncio.sleep(0.05)
    commands = listing.json()["commands"]
    assert {c["target"] for c in commands} == {"gateway:eu-west-1"}
    failed = await ctl("outbox", "list", "--state", "failed", "-o", "name")
    (failed_name,) = failed.lines()
    failed_id = failed_name.split("/", 1)[1]
    shown = await ctl("outbox", "get", failed_id)
    assert "FAILED" in shown.stdout
    assert "Request:" in shown.stdout
    by_decision = await ctl(
        "outbox", "list", "--decision", decisions[0]["decisionId"], "-o", "name"
    )
    assert len(by_decision.lines()) == 1
    retried = await ctl("outbox", "retry", failed_id, "--reason", "gateway fixed")
    assert retried.code == 0, retried.stderr
    assert retried.stdout.strip() == f"outbox/{failed_id} queued for delivery again"
    for _ in range(300):
        listing = await ctl("-o", "json", "outbox", "list")
        if states(listing) == ["COMMAND_STATE_ACKNOWLEDGED"] * 2:
            break
        await asyncio.sleep(0.05)
    assert states(listing) == ["COMMAND_STATE_ACKNOWLEDGED"] * 2
    again = await ctl("outbox", "retry", failed_id, "--reason", "twice")
    assert again.code == 8  # only FAILED commands are retried
    in_region = await ctl("decisions", "list", "--region", REGION, "-o", "name")
    assert len(in_region.lines()) == 2

    dry = await ctl("-o", "json", "policies", "dry-run", "fre-recovery")
    assert dry.code == 0, dry.stderr
    for decision in dry.json()["decisions"]:
        assert "decisionId" not in decision  # a dry run stores nothing
        assert decision["actions"][0]["kind"] == "POLICY_ACTION_KIND_RETRY_JOB"
    unsaved = await ctl(
        "policies",
        "dry-run",
        "--trigger",
        "degraded",
        "--action",
        "lower-queue-capacity:capacity_factor=0.5",
        "--limit",
        "5",
    )
    assert unsaved.code == 0, unsaved.stderr
    assert "nothing was changed" in unsaved.stderr
    assert "fix_1779116602946" in unsaved.stdout  # a DEGRADED job of the sample set
    assert len((await ctl("-o", "json", "outbox", "list")).json()["commands"]) == 2
    wrong = await ctl("policies", "dry-run", "--trigger", "degraded", "--action", "fly")
    assert wrong.code == 1

    deleted = await ctl("policies", "delete", "fre-recovery")
    assert deleted.code == 0, deleted.stderr
    assert (await ctl("policies", "get", "fre-recovery")).code == 6


async def test_admin_jobs_with_progress_and_audit(world: World, tmp_path: Path) -> None:
    ctl = world.ctl
    started = await ctl("admin-jobs", "start", "health-sweep")
    assert started.code == 0, started.stderr
    assert started.stdout.strip().endswith("succeeded")
    job_id = started.stdout.split()[0].split("/")[1]
    assert (await ctl("admin-jobs", "get", job_id)).code == 0
    assert (await ctl("admin-jobs", "wait", job_id)).code == 0
    watched = await ctl("-o", "json", "admin-jobs", "watch", job_id)
    assert watched.code == 0
    assert json.loads(watched.lines()[-1])["state"] == "ADMIN_JOB_STATE_SUCCEEDED"
    sync_job = await ctl(
        "-o", "json", "admin-jobs", "start", "sync-sweep", "-p", f"regions={REGION}"
    )
    assert sync_job.code == 0, sync_job.stderr
    assert sync_job.json()["state"] == "ADMIN_JOB_STATE_SUCCEEDED"
    detached = await ctl("admin-jobs", "start", "health-sweep", "--detach")
    assert detached.stdout.strip().endswith("started")
    listed = await ctl("admin-jobs", "list", "--kind", "health-sweep", "-o", "name")
    assert len(listed.lines()) == 2
    refused = await ctl("admin-jobs", "start", "region-drain")  # needs region and reason
    assert refused.code == 9

    entries = await ctl("-o", "json", "audit", "list")
    assert entries.code == 0, entries.stderr
    assert entries.json()["entries"]
    last = int(entries.json()["entries"][-1]["auditId"])
    stream = SignallingStream()
    tail = start_pposctl(
        world.plane,
        "audit",
        "watch",
        "--kind",
        "partner",
        "--after",
        str(last),
        "--max-events",
        "1",
        "--duration",
        "30s",
        stdout=stream,
    )
    await asyncio.sleep(0.3)
    alice = await add_operator(world.plane, "alice", "admin")
    alice_file = tmp_path / "alice.credential"
    alice_file.write_text(alice.credential + "\n")
    alice_file.chmod(0o600)
    alice_env = {"PPOS_ADDRESS": world.plane.address, "PPOS_CONTROL_TOKEN_FILE": str(alice_file)}
    made = await pposctl(
        world.plane,
        "partners",
        "create",
        "tailcheck",
        "--display-name",
        "T",
        "--region",
        REGION,
        env=alice_env,
    )
    assert made.code == 0, made.stderr
    assert await asyncio.wait_for(tail, 30) == 0
    assert "partner/tailcheck" in stream.getvalue()
    assert "operator:alice" in stream.getvalue()  # the credential's holder, named by the plane
    by_kind = await ctl("audit", "list", "--kind", "partner", "--after", str(last))
    assert "partner/tailcheck" in by_kind.stdout


async def test_admin_job_progress_bar_on_a_terminal(world: World) -> None:
    stderr = SignallingStream(terminal=True)
    code = await asyncio.to_thread(
        run,
        ["admin-jobs", "start", "sync-sweep"],
        environ=operator_env(world.plane),
        stdout=io.StringIO(),
        stderr=stderr,
    )
    assert code == 0
    assert "sync-sweep" in stderr.getvalue()
    assert "\x1b[" in stderr.getvalue()


async def test_cancelling_an_admin_job(slow_world: World) -> None:
    ctl = slow_world.ctl
    job = await ctl("-o", "json", "admin-jobs", "start", "sync-sweep", "--detach")
    assert job.code == 0, job.stderr
    job_id = job.json()["adminJobId"]
    stopping = await ctl("admin-jobs", "cancel", job_id, "--reason", "wrong window", "--wait")
    assert stopping.code == 14
    assert stopping.stdout.strip() == f"admin-job/{job_id} cancelled"
    again = await ctl("admin-jobs", "cancel", job_id, "--reason", "twice")
    assert again.code == 8  # already ended: nothing to cancel
