"""Rows to protobuf messages."""

from __future__ import annotations

from ppos.controlplane.common.v1 import resource_pb2 as common_pb
from ppos.controlplane.core.timeutil import to_timestamp
from ppos.controlplane.noderegistry.v1 import node_pb2 as pb
from ppos.controlplane.services.node_registry.models import NodeRow

READINESS = {
    "READY": pb.READINESS_READY,
    "NOT_READY": pb.READINESS_NOT_READY,
    "DRAINING": pb.READINESS_DRAINING,
    "REIMAGING": pb.READINESS_REIMAGING,
    "LOST": pb.READINESS_LOST,
}
READINESS_NAME = {value: key for key, value in READINESS.items()}


def _condition(kind: str, holds: bool, reason: str, row: NodeRow) -> common_pb.Condition:
    return common_pb.Condition(
        type=kind,
        status=common_pb.CONDITION_STATUS_TRUE if holds else common_pb.CONDITION_STATUS_FALSE,
        reason=reason,
        last_transition_time=to_timestamp(row.last_transition_at),
    )


def node_to_proto(row: NodeRow) -> pb.Node:
    ready = row.readiness == "READY"
    return pb.Node(
        node_id=row.node_id,
        meta=common_pb.ObjectMeta(
            resource_version=str(row.resource_version),
            create_time=to_timestamp(row.created_at),
            update_time=to_timestamp(row.updated_at),
            labels={str(k): str(v) for k, v in row.labels.items()},
            generation=row.generation,
        ),
        spec=pb.NodeSpec(
            region=row.region,
            cluster=row.cluster,
            capacity_slots=row.capacity_slots,
            schedulable=row.schedulable,
            unschedulable_reason=row.unschedulable_reason,
            drain_deadline=to_timestamp(row.drain_deadline),
        ),
        status=pb.NodeStatus(
            readiness=READINESS[row.readiness],
            readiness_reason=row.readiness_reason,
            last_transition_time=to_timestamp(row.last_transition_at),
            last_heartbeat_time=to_timestamp(row.last_heartbeat_at),
            container=pb.ContainerVersion(image=row.container_image, digest=row.container_digest),
            slots_in_use=row.slots_in_use,
            conditions=[
                _condition("Ready", ready, row.readiness_reason or row.readiness, row),
                _condition(
                    "Schedulable",
                    row.schedulable,
                    "Cordoned" if not row.schedulable else "Schedulable",
                    row,
                ),
            ],
            credential_generation=row.credential_generation,
        ),
    )


def node_snapshot(row: NodeRow) -> dict[str, object]:
    """The node as the audit log records it (no credential material)."""
    return {
        "node_id": row.node_id,
        "region": row.region,
        "cluster": row.cluster,
        "labels": dict(row.labels),
        "capacity_slots": row.capacity_slots,
        "schedulable": row.schedulable,
        "unschedulable_reason": row.unschedulable_reason,
        "readiness": row.readiness,
        "container_image": row.container_image,
        "container_digest": row.container_digest,
        "credential_generation": row.credential_generation,
        "resource_version": row.resource_version,
    }
