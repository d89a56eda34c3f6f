"""What each admin job kind does, step by step, through its peers' contracts.

- HEALTH_SWEEP: NodeRegistry.RunHealthSweep.
- SYNC_SWEEP: RegistrySync.StartSweep (idempotent on the admin job id, so a
  resumed job finds its sweep again), then GetSweep until it ends; a cancel is
  passed on with CancelSweep.
- REIMAGE_ROLLOUT: every node of a region running `image` gets a ReimageNode
  to `target_image` (idempotency key `<job>:<node>`), in node id order; the
  checkpoint is the last node done.
- REGION_DRAIN: every node of a region gets a DrainNode, in node id order.
- MIRROR_VERIFY: RegistrySync.VerifyMirror region by region (mirror_verify.py).

Parameters are validated by `validate_parameters` before a job is accepted.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from typing import Any

import grpc

from ppos.controlplane.core.settings import ConfigError
from ppos.controlplane.core.timeutil import to_duration
from ppos.controlplane.core.validation import (
    DIGEST,
    IMAGE_REFERENCE,
    MAX_MAP_ENTRIES,
    MAX_REGIONS,
    Violations,
    map_key_path,
)
from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as nr_pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as nr_grpc
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as rs_pb
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2_grpc as rs_grpc
from ppos.controlplane.services.governance.admin_jobs.handle import (
    Cancelled,
    JobFailed,
    JobHandle,
    JobKind,
)
from ppos.controlplane.services.governance.admin_jobs.mirror_verify import (
    TRUE_OR_FALSE,
    mirror_verify,
)

LIST_PAGE = 100
# A node that cannot take the step (already draining, gone) is skipped, not fatal.
SKIPPABLE = frozenset({grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND})
MAX_SKIPPED_SHOWN = 100
MAX_GRACE_SECONDS = 7 * 86400

# Accepted parameters per kind: name -> required.
PARAMETERS: dict[str, dict[str, bool]] = {
    "HEALTH_SWEEP": {"reason": False},
    "SYNC_SWEEP": {"regions": False, "reason": False},
    "REIMAGE_ROLLOUT": {
        "region": True,
        "image": True,
        "target_image": True,
        "target_digest": True,
        "reason": True,
    },
    "REGION_DRAIN": {"region": True, "reason": True, "grace_seconds": False},
    "MIRROR_VERIFY": {"regions": False, "against_source": False, "reason": False},
}


def validate_parameters(violations: Violations, kind: str, parameters: dict[str, str]) -> None:
    accepted = PARAMETERS[kind]
    if not violations.at_most("parameters", parameters, MAX_MAP_ENTRIES, "parameters"):
        return
    for key in sorted(parameters):
        if key not in accepted:
            violations.add(
                map_key_path("parameters", key),
                f"is not a parameter of {kind} (it takes: {', '.join(accepted)})",
            )
    for key, required in accepted.items():
        if required and not parameters.get(key, "").strip():
            violations.add(f"parameters[{key!r}]", f"is required for {kind}")
    if parameters.get("reason", "").strip():
        violations.reason("parameters['reason']", parameters["reason"], required=False)
    if parameters.get("region", "").strip():
        violations.region("parameters['region']", parameters["region"])
    regions = _regions(parameters)
    listed = violations.text(
        "parameters['regions']", parameters.get("regions", ""), max_length=MAX_REGIONS * 64
    )
    if listed and violations.at_most("parameters['regions']", regions, MAX_REGIONS, "regions"):
        for index, region in enumerate(regions):
            violations.region(f"parameters['regions'][{index}]", region)
    for name in ("image", "target_image"):
        if parameters.get(name, "").strip():
            violations.syntax(f"parameters[{name!r}]", parameters[name], IMAGE_REFERENCE)
    if parameters.get("target_digest", "").strip():
        violations.syntax("parameters['target_digest']", parameters["target_digest"], DIGEST)
    same = parameters.get("image") == parameters.get("target_image")
    if kind == "REIMAGE_ROLLOUT" and same and parameters.get("image"):
        violations.add(
            "parameters['target_image']", "is the image being replaced: nothing would change"
        )
    if parameters.get("against_source", "false") not in TRUE_OR_FALSE:
        violations.add("parameters['against_source']", "must be true or false")
    grace = parameters.get("grace_seconds", "")
    if grace:
        violations.whole_number(
            "parameters['grace_seconds']",
            grace,
            1,
            MAX_GRACE_SECONDS,
            f"must be a whole number of seconds between 1 and {MAX_GRACE_SECONDS} in ASCII digits",
        )


def conflict_scope(kind: str, parameters: dict[str, str]) -> str:
    """Jobs with the same scope may not run at once (e.g. two rollouts of one region)."""
    if kind in ("REIMAGE_ROLLOUT", "REGION_DRAIN"):
        return f"nodes:{parameters.get('region', '')}"
    return kind


def _regions(parameters: dict[str, str]) -> list[str]:
    return [r.strip() for r in parameters.get("regions", "").split(",") if r.strip()]


def _nodes_stub(job: JobHandle) -> nr_grpc.NodeRegistryServiceAsyncStub:
    try:
        return job.peers.node_registry()
    except ConfigError as exc:
        raise JobFailed(str(exc)) from None


def _sync_stub(job: JobHandle) -> rs_grpc.RegistrySyncServiceAsyncStub:
    try:
        return job.peers.registry_sync()
    except ConfigError as exc:
        raise JobFailed(str(exc)) from None


def _deadline(job: JobHandle) -> float:
    return job.peers.deadline


# -- health sweep ----------------------------------------------------------------------


async def health_sweep(job: JobHandle) -> dict[str, Any]:
    stub = _nodes_stub(job)
    await job.progress(done=0, total=1, message="running the node health sweep")
    reply = await job.call(
        "NodeRegistry.RunHealthSweep",
        lambda: stub.RunHealthSweep(nr_pb.RunHealthSweepRequest(), timeout=_deadline(job)),
    )
    result = {
        "marked_not_ready": reply.marked_not_ready,
        "marked_lost": reply.marked_lost,
        "commands_timed_out": reply.commands_timed_out,
    }
    await job.progress(
        done=1,
        total=1,
        message=(
            f"swept: {reply.marked_not_ready} not ready, {reply.marked_lost} lost, "
            f"{reply.commands_timed_out} commands timed out"
        ),
    )
    return result


# -- sync sweep ------------------------------------------------------------------------

SWEEP_DONE = {
    rs_pb.SWEEP_STATE_SUCCEEDED,
    rs_pb.SWEEP_STATE_FAILED,
    rs_pb.SWEEP_STATE_CANCELLED,
}


async def sync_sweep(job: JobHandle) -> dict[str, Any]:
    stub = _sync_stub(job)
    sweep_id = str(job.checkpoint.get("sweep_id", ""))
    if not sweep_id:
        reply = await job.call(
            "RegistrySync.StartSweep",
            lambda: stub.StartSweep(
                rs_pb.StartSweepRequest(regions=_regions(job.parameters), request_id=job.job_id),
                timeout=_deadline(job),
            ),
        )
        sweep_id = reply.sweep.sweep_id
        await job.progress(
            done=0,
            total=0,
            message=f"sweep {sweep_id} started",
            checkpoint={"sweep_id": sweep_id},
        )
    cancel_sent = False
    while True:
        got = await job.call(
            "RegistrySync.GetSweep",
            lambda: stub.GetSweep(rs_pb.GetSweepRequest(sweep_id=sweep_id), timeout=_deadline(job)),
        )
        sweep = got.sweep
        summary = (
            f"sweep {sweep_id} {rs_pb.SweepState.Name(sweep.state)}: {sweep.pages} pages, "
            f"{sweep.records_synced} records, {sweep.quarantined} quarantined"
        )
        if sweep.state in SWEEP_DONE:
            result = {
                "sweep_id": sweep_id,
                "state": rs_pb.SweepState.Name(sweep.state),
                "records_synced": sweep.records_synced,
                "bytes_synced": sweep.bytes_synced,
                "quarantined": sweep.quarantined,
                "pages": sweep.pages,
            }
            if sweep.state == rs_pb.SWEEP_STATE_FAILED:
                raise JobFailed(f"{summary}: {sweep.error}")
            if sweep.state == rs_pb.SWEEP_STATE_CANCELLED:
                raise Cancelled(await job.cancel_requested() or f"sweep {sweep_id} was cancelled")
            await job.progress(
                done=sweep.records_synced, total=sweep.records_synced, message=summary
            )
            return result
        try:
            await job.progress(done=sweep.records_synced, total=0, message=summary)
        except Cancelled:
            if not cancel_sent:
                await job.call(
                    "RegistrySync.CancelSweep",
                    lambda: stub.CancelSweep(
                        rs_pb.CancelSweepRequest(sweep_id=sweep_id), timeout=_deadline(job)
                    ),
                )
                cancel_sent = True
        await asyncio.sleep(job.poll_interval)


# -- node walks (rollout, drain) -----------------------------------------------------


async def _region_nodes(
    job: JobHandle, node_filter: node_pb2.NodeFilter, after: str
) -> AsyncIterator[node_pb2.Node]:
    """Nodes matching the filter with ids after `after`, in id order, a page at a time."""
    stub = _nodes_stub(job)
    token = ""
    while True:
        request = nr_pb.ListNodesRequest(filter=node_filter, page_size=LIST_PAGE, page_token=token)
        page = await job.call(
            "NodeRegistry.ListNodes",
            functools.partial(stub.ListNodes, request, timeout=_deadline(job)),
        )
        for node in page.nodes:
            if node.node_id > after:
                yield node
        token = page.next_page_token
        if not token:
            return


async def _count(job: JobHandle, node_filter: node_pb2.NodeFilter) -> int:
    total = 0
    async for _node in _region_nodes(job, node_filter, ""):
        total += 1
    return total


async def _walk(
    job: JobHandle,
    node_filter: node_pb2.NodeFilter,
    verb: str,
    act: Any,
) -> dict[str, Any]:
    state = dict(job.checkpoint)
    if "total" not in state:
        state = {"total": await _count(job, node_filter), "after": "", "done": 0, "skipped": []}
        await job.progress(
            done=0,
            total=state["total"],
            message=f"{state['total']} nodes to {verb}",
            checkpoint=state,
        )
    async for node in _region_nodes(job, node_filter, str(state["after"])):
        try:
            await act(node)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in SKIPPABLE:
                raise
            if len(state["skipped"]) < MAX_SKIPPED_SHOWN:
                state["skipped"].append(
                    {"node_id": node.node_id, "reason": f"{exc.code().name}: {exc.details()}"}
                )
        else:
            state["done"] += 1
        state["after"] = node.node_id
        state["total"] = max(int(state["total"]), int(state["done"]) + len(state["skipped"]))
        await job.progress(
            done=int(state["done"]) + len(state["skipped"]),
            total=int(state["total"]),
            message=f"{verb}: {state['done']} done, {len(state['skipped'])} skipped; "
            f"last node {node.node_id}",
            checkpoint=state,
        )
    return {"done": state["done"], "skipped": state["skipped"], "last_node_id": state["after"]}


async def reimage_rollout(job: JobHandle) -> dict[str, Any]:
    stub = _nodes_stub(job)
    params = job.parameters
    target = node_pb2.ContainerVersion(
        image=params["target_image"], digest=params.get("target_digest", "")
    )

    async def reimage(node: node_pb2.Node) -> None:
        await job.call(
            f"NodeRegistry.ReimageNode({node.node_id})",
            lambda: stub.ReimageNode(
                nr_pb.ReimageNodeRequest(
                    node_id=node.node_id,
                    target=target,
                    reason=params["reason"],
                    idempotency_key=f"{job.job_id}:{node.node_id}",
                ),
                timeout=_deadline(job),
            ),
            pass_through=SKIPPABLE,
        )

    node_filter = node_pb2.NodeFilter(region=params["region"], container_image=params["image"])
    return await _walk(job, node_filter, "re-image", reimage)


async def region_drain(job: JobHandle) -> dict[str, Any]:
    stub = _nodes_stub(job)
    params = job.parameters
    grace = int(params.get("grace_seconds") or 600)

    async def drain(node: node_pb2.Node) -> None:
        await job.call(
            f"NodeRegistry.DrainNode({node.node_id})",
            lambda: stub.DrainNode(
                nr_pb.DrainNodeRequest(
                    node_id=node.node_id, reason=params["reason"], grace=to_duration(grace)
                ),
                timeout=_deadline(job),
            ),
            pass_through=SKIPPABLE,
        )

    return await _walk(job, node_pb2.NodeFilter(region=params["region"]), "drain", drain)


KINDS: dict[str, JobKind] = {
    "HEALTH_SWEEP": health_sweep,
    "SYNC_SWEEP": sync_sweep,
    "REIMAGE_ROLLOUT": reimage_rollout,
    "REGION_DRAIN": region_drain,
    "MIRROR_VERIFY": mirror_verify,
}
