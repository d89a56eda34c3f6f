"""The MIRROR_VERIFY admin job, run by the plane's own runner through the registry
sync's contract: progress by region, its result kept in the job and the audit."""

from __future__ import annotations

import json
from pathlib import Path

import grpc

from ppos.controlplane.governance.v1 import governance_service_pb2 as gov_pb
from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as pb
from tests.governance.support import Operator
from tests.registry_sync.conftest import WorldFactory
from tests.registry_sync.harness import call_error, write_faults
from tests.support.polling import eventually

EU, US = "eu-west-1", "us-east-1"
ENDED = (res.ADMIN_JOB_STATE_SUCCEEDED, res.ADMIN_JOB_STATE_FAILED, res.ADMIN_JOB_STATE_CANCELLED)


async def run_job(operator: Operator, **parameters: str) -> res.AdminJob:
    started = await operator.StartAdminJob(
        gov_pb.StartAdminJobRequest(kind=res.ADMIN_JOB_KIND_MIRROR_VERIFY, parameters=parameters)
    )
    ended = await eventually(
        lambda: operator.GetAdminJob(
            gov_pb.GetAdminJobRequest(admin_job_id=started.job.admin_job_id)
        ),
        lambda reply: reply.job.state in ENDED,
        within=60,
    )
    job: res.AdminJob = ended.job
    return job


async def test_the_mirror_verify_job_shows_progress_its_result_and_is_audited(
    world: WorldFactory, tmp_path: Path
) -> None:
    faults = tmp_path / "faults.json"
    write_faults(faults, {})
    w = await world(
        {
            EU: {"synthetic": 12, "synthetic_size": 400, "extra": ["--faults", str(faults)]},
            US: {"synthetic": 8, "synthetic_size": 400},
        }
    )
    sweep = await w.sweep()
    assert sweep.state == pb.SWEEP_STATE_SUCCEEDED, sweep.error
    operator = Operator(w.plane.channel, w.plane.operator)

    clean = await run_job(operator, against_source="true", reason="weekly check")
    assert clean.state == res.ADMIN_JOB_STATE_SUCCEEDED, clean.error
    assert (clean.progress.done, clean.progress.total) == (2, 2)
    assert "20 rows verified in all" in clean.progress.message
    result = json.loads(clean.result_json)
    assert (result["rows"], result["failed_regions"]) == (20, [])
    assert result["regions"][EU]["source"]["state"] == "MATCHES"
    assert result["regions"][US]["source"]["compared"] == 8

    # One payload changed at the eu registry; the us registry goes away.
    write_faults(faults, {"changed_at": [4]})
    await w.sims[US].stop(0)
    found = await run_job(operator, against_source="true")
    assert found.state == res.ADMIN_JOB_STATE_FAILED
    assert f"{EU}: verified (12 records), source DIVERGES (1 changed" in found.error
    assert f"{US}: verified (8 records), source UNAVAILABLE" in found.error
    result = json.loads(found.result_json)
    assert result["failed_regions"] == [EU, US]
    (divergence,) = result["regions"][EU]["source"]["divergences"]
    record = w.feed(EU).record(4)
    assert (divergence["kind"], divergence["job_id"]) == ("CHANGED", record.job_id)
    assert US in result["regions"][US]["source"]["detail"]

    # Without the source, the chains alone: both regions intact.
    chains = await run_job(operator, regions=EU)
    assert chains.state == res.ADMIN_JOB_STATE_SUCCEEDED, chains.error
    assert "source" not in json.loads(chains.result_json)["regions"][EU]

    audit = await operator.ListAuditEntries(
        gov_pb.ListAuditEntriesRequest(resource_kind="admin_job", resource_id=found.admin_job_id)
    )
    methods = [e.method.rsplit("/", 1)[-1] for e in audit.entries]
    assert methods == ["StartAdminJob", "admin-job:start", "admin-job:failed"]
    assert json.loads(json.loads(audit.entries[-1].after_json)["result_json"]) == result


async def test_bad_parameters_are_refused(world: WorldFactory) -> None:
    w = await world({EU: {"synthetic": 1}})
    operator = Operator(w.plane.channel, w.plane.operator)
    for parameters in ({"against_source": "yes"}, {"region": EU}):
        request = gov_pb.StartAdminJobRequest(
            kind=res.ADMIN_JOB_KIND_MIRROR_VERIFY, parameters=parameters
        )
        error = await call_error(operator.StartAdminJob(request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, parameters
