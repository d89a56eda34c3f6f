"""What a policy does to one synced job revision: pure planning, no I/O.

The reconciler and DryRunGovernancePolicy both call `plan`; the reconciler
then writes the plan (decision, outbox commands, queue changes, audit) in one
transaction, the dry run only shows it. Inputs the plan needs from elsewhere
(how often the node failed recently, what it runs, the queue's capacity) are
gathered by the caller and passed in, so the same inputs always give the same
plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ppos.controlplane.services.governance.outbox import commands
from ppos.controlplane.services.governance.outbox.commands import Command, JobCitation


@dataclass(frozen=True)
class JobView:
    """The fields of a synced job revision that governance reads (never its payload)."""

    region: str
    job_id: str
    revision: int
    tenant_id: str
    queue_id: str
    node_id: str
    container_image: str
    governance_state: str
    payload_sha256: bytes
    sync_sequence: int
    record_time_epoch: float

    @property
    def ref(self) -> str:
        return f"{self.region}/{self.job_id}@{self.revision}"


@dataclass(frozen=True)
class PolicyView:
    policy_id: str
    generation: int
    tenant_scope: str
    trigger_state: str
    actions: list[dict[str, Any]]
    enabled: bool
    node_failure_threshold: int
    node_failure_window_seconds: int


@dataclass(frozen=True)
class Context:
    """What the plan needs to know beyond the job and the policy."""

    # Failures of the job's node in the policy's window, this one included.
    node_failures: int = 1
    # A cordon of the node already decided within the window (decision id).
    node_cordoned_by: str = ""
    # The node's current container (image, digest) per the node registry, if known.
    node_container: tuple[str, str] | None = None
    # Whether the node registry knows the node (None: not asked / unreachable).
    node_known: bool | None = None
    # The job's queue in governance: (capacity, state), if governance has it.
    queue: tuple[int, str] | None = None


@dataclass
class Step:
    """One planned action."""

    kind: str
    description: str
    target: str
    command: Command | None = None
    # For LOWER_QUEUE_CAPACITY: the capacity to set.
    new_capacity: int | None = None


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    node_action: str = ""

    def rationale(self, job: JobView, policy: PolicyView) -> str:
        head = (
            f"synced job {job.job_id} revision {job.revision} in {job.region} is "
            f"{job.governance_state}"
            + (f" on node {job.node_id}" if job.node_id else "")
            + f" (canonical payload sha256 {job.payload_sha256.hex()[:16]}..., sync sequence "
            f"{job.sync_sequence}); policy {policy.policy_id} generation {policy.generation}"
        )
        done = "; ".join(s.description for s in self.steps) or "no action"
        notes = " ".join(self.notes)
        return f"{head}: {done}." + (f" {notes}" if notes else "")


def _reason(job: JobView, policy: PolicyView) -> str:
    return (
        f"governance policy {policy.policy_id}: job {job.job_id} revision {job.revision} "
        f"{job.governance_state}"
    )


def plan(job: JobView, policy: PolicyView, context: Context, decision_id: str) -> Plan:
    """The steps `policy` takes for `job` (commands carry `decision_id`)."""
    result = Plan()
    citation = JobCitation(job.region, job.job_id, job.revision, policy.policy_id)
    reason = _reason(job, policy)
    cordon_instead = (
        policy.node_failure_threshold > 0 and context.node_failures >= policy.node_failure_threshold
    )
    for action in policy.actions:
        kind, params = action["kind"], action.get("parameters", {})
        if kind in ("REIMAGE_NODE", "CORDON_NODE"):
            _node_step(result, job, policy, context, citation, reason, kind, params, cordon_instead)
        elif kind == "RETRY_JOB":
            result.steps.append(_retry_step(job, context, citation, reason, decision_id))
        elif kind == "REROUTE_JOB":
            region = params.get("target_region", "")
            partner = params.get("target_partner_id", "")
            where = f"region {region}" if region else f"partner {partner}"
            result.steps.append(
                Step(
                    kind,
                    f"ask the {job.region} gateway to move {job.job_id}'s pending work to {where}",
                    f"job/{job.region}/{job.job_id}",
                    commands.reroute_job(citation, region, partner, reason, decision_id),
                )
            )
        elif kind == "REQUEST_REMAINDER":
            result.steps.append(
                Step(
                    kind,
                    f"ask the {job.region} gateway for the remainder of {job.job_id}",
                    f"job/{job.region}/{job.job_id}",
                    commands.request_remainder(citation, reason, decision_id),
                )
            )
        elif kind == "ROUTE_TO_REVIEW":
            review_queue = params.get("review_queue_id", "")
            partner = params.get("partner_id", "")
            where = f"review queue {review_queue}" if review_queue else f"partner {partner}"
            result.steps.append(
                Step(
                    kind,
                    f"route {job.job_id} (findings unchanged) to {where}",
                    f"job/{job.region}/{job.job_id}",
                    commands.route_to_review(citation, review_queue, partner, reason, decision_id),
                )
            )
        elif kind == "LOWER_QUEUE_CAPACITY":
            _capacity_step(result, job, context, params)
    return result


def _retry_step(
    job: JobView, context: Context, citation: JobCitation, reason: str, decision_id: str
) -> Step:
    # The new attempt waits for a slot in the job's own queue when it is governed here.
    queue = (job.tenant_id, job.queue_id) if context.queue is not None else ("", "")
    return Step(
        "RETRY_JOB",
        f"ask the {job.region} gateway for a new attempt of {job.job_id}"
        + (f" on a node other than {job.node_id}" if job.node_id else "")
        + (f", queued for a slot in {queue[0]}/{queue[1]}" if queue[1] else ""),
        f"job/{job.region}/{job.job_id}",
        commands.retry_job(citation, job.node_id, reason, decision_id, queue),
    )


def _node_step(
    result: Plan,
    job: JobView,
    policy: PolicyView,
    context: Context,
    citation: JobCitation,
    reason: str,
    kind: str,
    params: dict[str, str],
    cordon_instead: bool,
) -> None:
    if not job.node_id:
        result.notes.append(f"{kind}: the record names no node, nothing to do to one.")
        return
    if context.node_known is False:
        result.notes.append(f"{kind}: node {job.node_id} is unknown to the node registry.")
        return
    node_target = f"node/{job.node_id}"
    if kind == "REIMAGE_NODE" and cordon_instead:
        result.notes.append(
            f"Node {job.node_id} failed {context.node_failures} times within "
            f"{policy.node_failure_window_seconds}s (threshold {policy.node_failure_threshold}): "
            "cordoned instead of re-imaged again."
        )
        kind = "CORDON_NODE"
    if kind == "CORDON_NODE":
        if context.node_cordoned_by:
            result.notes.append(
                f"Node {job.node_id} was already cordoned by decision {context.node_cordoned_by}."
            )
            return
        result.node_action = "CORDON"
        result.steps.append(
            Step(
                kind,
                f"cordon node {job.node_id} (no new work until an operator uncordons it)",
                node_target,
                commands.cordon_node(citation, job.node_id, reason),
            )
        )
        return
    _reimage_step(result, job, context, citation, reason, params)


def _reimage_step(
    result: Plan,
    job: JobView,
    context: Context,
    citation: JobCitation,
    reason: str,
    params: dict[str, str],
) -> None:
    node_target = f"node/{job.node_id}"
    image = params.get("image", "")
    digest = params.get("digest", "")
    if not image and context.node_container is not None:
        image, digest = context.node_container
    if not image or not digest:
        result.notes.append(
            f"REIMAGE_NODE: no pinned version (image and digest) known for node {job.node_id}; "
            "name one in the policy or let the node registry report the node's."
        )
        return
    result.node_action = "REIMAGE"
    shown = image + (f"@{digest}" if digest else "")
    result.steps.append(
        Step(
            "REIMAGE_NODE",
            f"re-image node {job.node_id} to {shown}",
            node_target,
            commands.reimage_node(citation, job.node_id, image, digest, reason),
        )
    )


def _capacity_step(result: Plan, job: JobView, context: Context, params: dict[str, str]) -> None:
    if context.queue is None:
        result.notes.append(
            f"LOWER_QUEUE_CAPACITY: queue {job.tenant_id}/{job.queue_id} is not governed here."
        )
        return
    capacity, _state = context.queue
    factor = float(params["capacity_factor"])
    floor = int(params.get("min_capacity") or 1)
    lowered = max(floor, math.floor(capacity * factor))
    if lowered >= capacity:
        result.notes.append(
            f"LOWER_QUEUE_CAPACITY: queue {job.tenant_id}/{job.queue_id} is at {capacity}, "
            f"not above its floor {floor}."
        )
        return
    result.steps.append(
        Step(
            "LOWER_QUEUE_CAPACITY",
            f"lower queue {job.tenant_id}/{job.queue_id} capacity from {capacity} to {lowered} "
            f"(running jobs finish; waiting jobs start once fewer than {lowered} run)",
            f"queue/{job.tenant_id}/{job.queue_id}",
            None,
            lowered,
        )
    )
