"""Bringing a worker node into the registry the way a real node agent does."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as pb_grpc

IMAGE = "registry.example/ppos/preflight-worker:7.4.1"
DIGEST = "sha256:" + "ab" * 32


@dataclass
class EnrolledNode:
    node_id: str
    credential: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.credential}"),)


async def enroll_node(
    channel: grpc.aio.Channel,
    operator: tuple[tuple[str, str], ...],
    *,
    region: str = "eu-west-1",
    register: bool = True,
) -> EnrolledNode:
    stub = pb_grpc.NodeRegistryServiceStub(channel)
    enrollment = await stub.CreateEnrollment(
        pb.CreateEnrollmentRequest(region=region, cluster="c1"), metadata=operator
    )
    enrolled = await stub.EnrollNode(
        pb.EnrollNodeRequest(hostname="worker-1"),
        metadata=(("authorization", f"Bearer {enrollment.enrollment_token}"),),
    )
    node = EnrolledNode(enrolled.node_id, enrolled.node_credential)
    if register:
        await stub.RegisterNode(
            pb.RegisterNodeRequest(
                region=region,
                cluster="c1",
                container=node_pb2.ContainerVersion(image=IMAGE, digest=DIGEST),
                capacity_slots=4,
            ),
            metadata=node.metadata,
        )
    return node
