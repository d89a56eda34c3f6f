"""The transactional outbox: commands are rows written in the caller's transaction.

A command names its receiver (`gateway:<region>` or `noderegistry`), the RPC,
the serialised request (sent byte for byte on every attempt) and an
idempotency key that travels inside the request, so a receiver that already
acted on it answers as a duplicate and does nothing again. Nothing is sent
here: the dispatcher delivers committed rows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from google.protobuf import json_format
from google.protobuf.message import Message
from sqlalchemy.orm import Session

from ppos.controlplane.core.ids import new_id
from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.core.validation import REQUEST_ID
from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as nr_pb
from ppos.controlplane.security.principal import Principal, current_request_id
from ppos.controlplane.services.governance.enums import GATEWAY_QUEUE_STATE
from ppos.controlplane.services.governance.models import OutboxRow, PartnerRouteRow, QueueRow
from ppos.preflight.v1 import gateway_service_pb2 as gw_pb

GATEWAY_SERVICE = "ppos.preflight.v1.PreflightGatewayService"
NODE_REGISTRY_SERVICE = "ppos.controlplane.noderegistry.v1.NodeRegistryService"
NODE_REGISTRY_TARGET = "noderegistry"
# Keys follow the request-id syntax receivers accept: letters, digits, '.', '_',
# ':' and '-', at most 128 characters.
MAX_KEY = 128


def gateway_target(region: str) -> str:
    return f"gateway:{region}"


def gateway_method(name: str) -> str:
    return f"/{GATEWAY_SERVICE}/{name}"


def node_method(name: str) -> str:
    return f"/{NODE_REGISTRY_SERVICE}/{name}"


def idempotency_key(*parts: object) -> str:
    """A readable key from its parts; hashed when it would be too long or not allowed."""
    key = ":".join(str(p) for p in parts)
    if len(key) <= MAX_KEY and REQUEST_ID.fullmatch(key):
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def operator_key() -> str:
    """Key of a command caused by an operator change: unique per command."""
    return new_id("cmdkey")


@dataclass(frozen=True)
class Command:
    """One command, fully formed: what to call, with what, about what."""

    target: str
    method: str
    request: Message
    idempotency_key: str
    subject: str


def request_json(request: Message) -> str:
    data = json_format.MessageToDict(request, preserving_proto_field_name=True)
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def enqueue(
    session: Session,
    command: Command,
    *,
    actor: Principal,
    decision_id: str | None = None,
) -> OutboxRow:
    """Add the command to the caller's transaction (it commits with the decision)."""
    now = utcnow()
    row = OutboxRow(
        command_id=new_id("cmd"),
        idempotency_key=command.idempotency_key,
        target=command.target,
        method=command.method,
        request_payload=command.request.SerializeToString(deterministic=True),
        request_json=request_json(command.request),
        subject=command.subject,
        state="PENDING",
        attempts=0,
        last_error="",
        decision_id=decision_id,
        issued_by_kind=actor.kind.value,
        issued_by_name=actor.name,
        request_id=current_request_id.get(),
        next_attempt_at=now,
        lease_owner="",
        lease_expires_at=None,
        receiver_command_id="",
        receiver_duplicate=False,
        acknowledged_at=None,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    return row


def header(key: str, reason: str, decision_id: str = "") -> gw_pb.CommandHeader:
    return gw_pb.CommandHeader(
        idempotency_key=key,
        reason=reason,
        decision_id=decision_id,
        request_id=current_request_id.get(),
    )


# -- gateway commands ------------------------------------------------------------------


def effective_queue_state(tenant_phase: str, queue_state: str) -> str:
    """What the gateway should enforce: a suspended tenant's queues hold, a retired one's drain."""
    if tenant_phase == "SUSPENDED":
        return "PAUSED"
    if tenant_phase == "RETIRED":
        return "DRAINING"
    return queue_state


def apply_queue_policy(queue: QueueRow, tenant_phase: str, reason: str) -> Command:
    key = operator_key()
    state = effective_queue_state(tenant_phase, queue.state)
    return Command(
        target=gateway_target(queue.region),
        method=gateway_method("ApplyQueuePolicy"),
        request=gw_pb.ApplyQueuePolicyRequest(
            header=header(key, reason or "queue policy changed"),
            tenant_id=queue.tenant_id,
            queue_id=queue.queue_id,
            capacity=queue.capacity,
            state=GATEWAY_QUEUE_STATE.to_proto(state),
            generation=queue.generation,
        ),
        idempotency_key=key,
        subject=f"queue/{queue.tenant_id}/{queue.queue_id}",
    )


def apply_partner_route(
    route: PartnerRouteRow, region: str, reason: str, *, delete: bool = False
) -> Command:
    key = operator_key()
    return Command(
        target=gateway_target(region),
        method=gateway_method("ApplyPartnerRoute"),
        request=gw_pb.ApplyPartnerRouteRequest(
            header=header(key, reason or "partner route changed"),
            route_id=route.route_id,
            tenant_id=route.tenant_id,
            queue_id=route.queue_id,
            partner_id=route.partner_id,
            priority=route.priority,
            delete=delete,
            generation=route.generation,
        ),
        idempotency_key=key,
        subject=f"route/{route.route_id}",
    )


@dataclass(frozen=True)
class JobCitation:
    """The synced job revision a decision acts on."""

    region: str
    job_id: str
    revision: int
    policy_id: str

    @property
    def subject(self) -> str:
        return f"job/{self.region}/{self.job_id}/{self.revision}"

    def key(self, action: str) -> str:
        return idempotency_key(
            "dec", self.region, self.job_id, self.revision, self.policy_id, action.lower()
        )


def retry_job(
    job: JobCitation,
    avoid_node_id: str,
    reason: str,
    decision_id: str,
    queue: tuple[str, str] = ("", ""),
) -> Command:
    """`queue`: (tenant, queue) the new attempt waits in for a slot ('' when not governed here)."""
    key = job.key("RETRY_JOB")
    return Command(
        target=gateway_target(job.region),
        method=gateway_method("RetryJob"),
        request=gw_pb.RetryJobRequest(
            header=header(key, reason, decision_id),
            job_id=job.job_id,
            failed_revision=job.revision,
            avoid_node_id=avoid_node_id,
            tenant_id=queue[0],
            queue_id=queue[1],
        ),
        idempotency_key=key,
        subject=job.subject,
    )


def reroute_job(
    job: JobCitation, target_region: str, target_partner_id: str, reason: str, decision_id: str
) -> Command:
    key = job.key("REROUTE_JOB")
    return Command(
        target=gateway_target(job.region),
        method=gateway_method("RerouteJob"),
        request=gw_pb.RerouteJobRequest(
            header=header(key, reason, decision_id),
            job_id=job.job_id,
            revision=job.revision,
            target_region=target_region,
            target_partner_id=target_partner_id,
        ),
        idempotency_key=key,
        subject=job.subject,
    )


def request_remainder(job: JobCitation, reason: str, decision_id: str) -> Command:
    key = job.key("REQUEST_REMAINDER")
    return Command(
        target=gateway_target(job.region),
        method=gateway_method("RequestRemainder"),
        request=gw_pb.RequestRemainderRequest(
            header=header(key, reason, decision_id), job_id=job.job_id, revision=job.revision
        ),
        idempotency_key=key,
        subject=job.subject,
    )


def route_to_review(
    job: JobCitation, review_queue_id: str, partner_id: str, reason: str, decision_id: str
) -> Command:
    key = job.key("ROUTE_TO_REVIEW")
    return Command(
        target=gateway_target(job.region),
        method=gateway_method("RouteJobToReview"),
        request=gw_pb.RouteJobToReviewRequest(
            header=header(key, reason, decision_id),
            job_id=job.job_id,
            revision=job.revision,
            review_queue_id=review_queue_id,
            partner_id=partner_id,
        ),
        idempotency_key=key,
        subject=job.subject,
    )


# -- node registry commands ----------------------------------------------------------


def reimage_node(job: JobCitation, node_id: str, image: str, digest: str, reason: str) -> Command:
    key = job.key("REIMAGE_NODE")
    return Command(
        target=NODE_REGISTRY_TARGET,
        method=node_method("ReimageNode"),
        request=nr_pb.ReimageNodeRequest(
            node_id=node_id,
            target=node_pb2.ContainerVersion(image=image, digest=digest),
            reason=reason,
            idempotency_key=key,
        ),
        idempotency_key=key,
        subject=f"node/{node_id}",
    )


def cordon_node(job: JobCitation, node_id: str, reason: str) -> Command:
    # CordonNode carries no key: cordoning is idempotent at the registry; the
    # outbox key still makes the command itself unique per decision.
    return Command(
        target=NODE_REGISTRY_TARGET,
        method=node_method("CordonNode"),
        request=nr_pb.CordonNodeRequest(node_id=node_id, reason=reason),
        idempotency_key=job.key("CORDON_NODE"),
        subject=f"node/{node_id}",
    )
