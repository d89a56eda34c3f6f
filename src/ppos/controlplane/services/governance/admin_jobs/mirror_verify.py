"""MIRROR_VERIFY: the synced mirror of some regions verified through RegistrySync.VerifyMirror.

One call per region (the regions given, or every region the sync reports),
with `against_source` when asked, so progress counts regions and the rows
verified so far, and a job resumed on another replica starts at the next
region (the checkpoint holds the regions done and their results). The job
SUCCEEDS when every region verified intact (and matches its registry);
otherwise it FAILS naming the regions, with the same result kept, so
`pposctl admin-jobs start mirror-verify` exits as `pposctl sync verify` does.
"""

from __future__ import annotations

import functools
from typing import Any

from ppos.controlplane.core.settings import ConfigError
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as rs_pb
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2_grpc as rs_grpc
from ppos.controlplane.services.governance.admin_jobs.handle import JobFailed, JobHandle

# A region's verification reads all its rows (and its registry's feed): far longer
# than an ordinary peer call may take.
VERIFY_DEADLINE = 600.0
# Source divergences kept per region in the job's result.
RESULT_DIVERGENCES = 10
TRUE_OR_FALSE = ("true", "false")


def against_source(parameters: dict[str, str]) -> bool:
    return parameters.get("against_source") == "true"


def _stub(job: JobHandle) -> rs_grpc.RegistrySyncServiceAsyncStub:
    try:
        return job.peers.registry_sync()
    except ConfigError as exc:
        raise JobFailed(str(exc)) from None


def _name(enum: Any, value: int, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix) if value in enum.values() else str(value)


def _chain_summary(v: rs_pb.MirrorVerification) -> dict[str, Any]:
    out: dict[str, Any] = {
        "intact": v.intact,
        "records": v.synced_records,
        "quarantined": v.quarantined_records,
        "checkpoints": v.checkpoints,
        "chain_head": v.chain_head.hex(),
    }
    if not v.intact:
        d = v.divergence
        out["divergence"] = {
            "kind": _name(rs_pb.DivergenceKind, d.kind, "DIVERGENCE_KIND_"),
            "table": d.table,
            "position": d.position,
            "row_id": d.row_id,
            "job_id": d.job_id,
            "revision": d.revision,
            "fields": list(d.fields),
            "detail": d.detail,
        }
    return out


def _source_summary(s: rs_pb.SourceComparison) -> dict[str, Any]:
    return {
        "state": _name(rs_pb.SourceCheckState, s.state, "SOURCE_CHECK_STATE_"),
        "detail": s.detail,
        "compared": s.mirror_records,
        "matching": s.matching,
        "changed": s.changed,
        "missing_at_source": s.missing_at_source,
        "not_mirrored": s.not_mirrored,
        "divergences": [
            {
                "kind": _name(rs_pb.SourceDivergenceKind, d.kind, "SOURCE_DIVERGENCE_KIND_"),
                "job_id": d.job_id,
                "revision": d.revision,
                "sync_sequence": d.sync_sequence,
                "detail": d.detail,
            }
            for d in s.divergences
        ],
        "conflicts": [
            {
                "job_id": c.job_id,
                "revision": c.revision,
                "quarantine_id": c.quarantine_id,
                "source_holds": _name(rs_pb.SourceHolds, c.source_holds, "SOURCE_HOLDS_"),
            }
            for c in s.conflicts
        ],
        "conflicts_total": s.conflicts_total,
    }


def _one_line(region: str, summary: dict[str, Any]) -> str:
    chain = "verified" if summary["intact"] else summary["divergence"]["kind"]
    line = f"{region}: {chain} ({summary['records']} records)"
    source = summary.get("source")
    if source is not None:
        line += f", source {source['state']}"
        if source["state"] == "DIVERGES":
            line += (
                f" ({source['changed']} changed, {source['missing_at_source']} missing at the "
                f"source, {source['not_mirrored']} not mirrored)"
            )
    return line


def _failed(summary: dict[str, Any]) -> bool:
    source = summary.get("source")
    return not summary["intact"] or (source is not None and source["state"] != "MATCHES")


async def _regions(job: JobHandle, stub: rs_grpc.RegistrySyncServiceAsyncStub) -> list[str]:
    listed = [r.strip() for r in job.parameters.get("regions", "").split(",") if r.strip()]
    if listed:
        return listed
    reply = await job.call(
        "RegistrySync.ListSyncStatuses",
        lambda: stub.ListSyncStatuses(rs_pb.ListSyncStatusesRequest(), timeout=job.peers.deadline),
    )
    return sorted(status.region for status in reply.statuses)


async def mirror_verify(job: JobHandle) -> dict[str, Any]:
    stub = _stub(job)
    source = against_source(job.parameters)
    state = dict(job.checkpoint)
    if "regions" not in state:
        regions = await _regions(job, stub)
        state = {"regions": regions, "results": {}, "rows": 0}
        await job.progress(
            done=0,
            total=len(regions),
            message=f"{len(regions)} regions to verify"
            + (" against their sources" if source else ""),
            checkpoint=state,
        )
    regions, results = list(state["regions"]), dict(state["results"])
    for region in regions:
        if region in results:
            continue
        request = rs_pb.VerifyMirrorRequest(
            regions=[region], against_source=source, max_divergences=RESULT_DIVERGENCES
        )
        reply = await job.call(
            f"RegistrySync.VerifyMirror({region})",
            functools.partial(stub.VerifyMirror, request, timeout=VERIFY_DEADLINE),
        )
        (verification,) = reply.verifications
        summary = _chain_summary(verification)
        if source:
            summary["source"] = _source_summary(verification.source)
        results[region] = summary
        state = {**state, "results": results, "rows": int(state["rows"]) + summary["records"]}
        await job.progress(
            done=len(results),
            total=len(regions),
            message=f"{_one_line(region, summary)}; {state['rows']} rows verified in all",
            checkpoint=state,
        )
    failed = [region for region in regions if _failed(results[region])]
    result = {
        "against_source": source,
        "regions": results,
        "rows": state["rows"],
        "failed_regions": failed,
    }
    if failed:
        raise JobFailed(
            "; ".join(_one_line(region, results[region]) for region in failed), result=result
        )
    return result
