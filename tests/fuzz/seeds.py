"""Valid requests to mutate: a small world of real resources, and a seed per method
filled from the descriptors by field name (ids of that world, or fresh ones)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from ppos.controlplane.governance.v1 import governance_service_pb2 as gov_pb
from ppos.controlplane.governance.v1 import governance_service_pb2_grpc as gov_grpc
from ppos.controlplane.governance.v1 import resources_pb2 as res
from tests.support.nodes import DIGEST, IMAGE, enroll_node

REGION = "eu-west-1"


@dataclass
class World:
    """Resources created through the API before fuzzing, so seeds reach past lookups."""

    tenant: str = "fz-acme"
    queue: str = "main"
    partner: str = "fz-shop"
    route: str = "fz-route"
    node: str = ""
    node_credential: str = ""

    def ids(self) -> dict[str, str]:
        return {
            "tenant_id": self.tenant,
            "queue_id": self.queue,
            "partner_id": self.partner,
            "default_partner_id": self.partner,
            "fallback_partner_id": self.partner,
            "route_id": self.route,
            "node_id": self.node,
            "resource_id": self.tenant,
        }


async def build_world(channel: grpc.aio.Channel, operator: Any) -> World:
    world = World()
    gov = gov_grpc.GovernanceServiceStub(channel)
    await gov.CreatePartner(
        gov_pb.CreatePartnerRequest(
            partner_id=world.partner, display_name="Shop", region=REGION, accepts_review=True
        ),
        metadata=operator,
    )
    await gov.ProvisionTenant(
        gov_pb.ProvisionTenantRequest(
            request_id="fz-provision",
            tenant_id=world.tenant,
            spec=res.TenantSpec(display_name="Acme", default_region=REGION),
            queues=[gov_pb.QueueTemplate(queue_id=world.queue, spec=res.QueueSpec(capacity=8))],
        ),
        metadata=operator,
    )
    await gov.CreatePartnerRoute(
        gov_pb.CreatePartnerRouteRequest(
            route_id=world.route,
            spec=res.PartnerRouteSpec(
                tenant_id=world.tenant, queue_id=world.queue, partner_id=world.partner
            ),
        ),
        metadata=operator,
    )
    node = await enroll_node(channel, operator, region=REGION)
    world.node, world.node_credential = node.node_id, node.credential
    return world


_STRINGS = {
    "region": REGION,
    "default_region": REGION,
    "source_region": REGION,
    "regions": REGION,
    "cluster": "c1",
    "reason": "fuzzing",
    "message": "fuzzing",
    "not_ready_reason": "Warming",
    "display_name": "Fuzz",
    "hostname": "worker-fz",
    "image": IMAGE,
    "container_image": IMAGE,
    "digest": DIGEST,
    "label_selector": "tier=edge",
    "resource_kind": "tenant",
    "job_id": "job-1",
    "policy_id": "fz-policy",
}
_INTS = {
    "capacity": 4,
    "capacity_slots": 4,
    "page_size": 10,
    "priority": 1,
    "limit": 10,
    "node_failure_threshold": 3,
    "node_failure_window_seconds": 60,
    "revision": 1,
}


class SeedMaker:
    """Plausible requests: ids of the world or fresh ones, sensible scalars."""

    def __init__(self, world: World, rng: random.Random) -> None:
        self._ids = world.ids()
        self._rng = rng
        self._fresh = 0

    def fresh_id(self) -> str:
        self._fresh += 1
        return f"fz{self._fresh}-{self._rng.randrange(1 << 30):x}"

    def seed(self, descriptor: Descriptor) -> Message:
        message = GetMessageClass(descriptor)()
        self._fill(message, depth=0)
        return message

    def _fill(self, message: Message, depth: int) -> None:
        for field in message.DESCRIPTOR.fields:
            if depth > 3:
                return
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                self._fill_map(message, field)
            elif field.is_repeated:
                self._fill_repeated(message, field, depth)
            elif field.message_type is not None:
                self._fill(getattr(message, field.name), depth + 1)
            else:
                setattr(message, field.name, self.scalar(field))

    def _fill_map(self, message: Message, field: FieldDescriptor) -> None:
        if field.name == "labels":
            getattr(message, field.name)["tier"] = "edge"

    def _fill_repeated(self, message: Message, field: FieldDescriptor, depth: int) -> None:
        values = getattr(message, field.name)
        if field.message_type is not None:
            if self._rng.random() < 0.5:
                self._fill(values.add(), depth + 1)
        else:
            values.append(self.scalar(field))

    def scalar(self, field: FieldDescriptor) -> Any:
        name = field.name
        if field.type == FieldDescriptor.TYPE_STRING:
            if name in self._ids:
                return self._ids[name] if self._rng.random() < 0.7 else self.fresh_id()
            if name in ("request_id", "idempotency_key"):
                return "req-" + self.fresh_id()
            if name.endswith("_id") and name not in _STRINGS:
                return self.fresh_id()
            return _STRINGS.get(name, "")
        if field.type == FieldDescriptor.TYPE_BYTES:
            return b""
        if field.type == FieldDescriptor.TYPE_BOOL:
            return self._rng.random() < 0.5
        if field.type == FieldDescriptor.TYPE_ENUM:
            values = [v.number for v in field.enum_type.values if v.number != 0]
            return self._rng.choice(values) if values else 0
        if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            return 1.0
        if name.startswith("after") or name.startswith("resume"):
            return 0
        return _INTS.get(name, 1)
