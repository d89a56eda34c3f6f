"""Valid requests to mutate: a small world of real resources, and a seed per method
filled from the descriptors by field name (ids of that world, or fresh ones)."""

from __future__ import annotations

import dataclasses
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
    # Real next-page tokens by request type (harvested from lists of two or more).
    page_tokens: dict[str, str] = dataclasses.field(default_factory=dict)

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
    # Second ones, so that lists have a next page whose token the fuzzer can forge.
    await gov.CreatePartner(
        gov_pb.CreatePartnerRequest(partner_id="fz-shop-2", display_name="Shop 2", region=REGION),
        metadata=operator,
    )
    await gov.ProvisionTenant(
        gov_pb.ProvisionTenantRequest(
            request_id="fz-provision-2",
            tenant_id="fz-beta",
            spec=res.TenantSpec(display_name="Beta", default_region=REGION),
            queues=[
                gov_pb.QueueTemplate(queue_id=name, spec=res.QueueSpec(capacity=2))
                for name in ("main", "rush")
            ],
        ),
        metadata=operator,
    )
    await enroll_node(channel, operator, region=REGION)
    node = await enroll_node(channel, operator, region=REGION)
    world.node, world.node_credential = node.node_id, node.credential
    return world


async def harvest_page_tokens(
    channel: grpc.aio.Channel, operator: Any, world: World, methods: list[Any]
) -> None:
    """A real next-page token of every list that has one, by its request type."""
    seeds = SeedMaker(world, random.Random(0), plain=True)
    for method in methods:
        fields = method.input.fields_by_name
        if method.streaming or "page_token" not in fields or "page_size" not in fields:
            continue
        request = seeds.seed(method.input)
        request.page_size = 1
        data = await channel.unary_unary(method.path)(
            request.SerializeToString(), metadata=operator, timeout=30
        )
        reply = GetMessageClass(method.output)()
        reply.ParseFromString(data)
        token = getattr(reply, "next_page_token", "")
        if token:
            world.page_tokens[method.input.full_name] = token


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

    def __init__(self, world: World, rng: random.Random, *, plain: bool = False) -> None:
        """`plain`: the world's ids only, and no filters (a request that lists everything)."""
        self._ids = world.ids()
        self._tokens = world.page_tokens
        self._rng = rng
        self._plain = plain
        self._fresh = 0

    def fresh_id(self) -> str:
        self._fresh += 1
        return f"fz{self._fresh}-{self._rng.randrange(1 << 30):x}"

    def seed(self, descriptor: Descriptor) -> Message:
        message = GetMessageClass(descriptor)()
        if self._plain:
            return message
        self._fill(message, depth=0)
        token = self._tokens.get(descriptor.full_name)
        if token and self._rng.random() < 0.5:
            # The filters the token was issued for: none (see harvest_page_tokens).
            message.Clear()
            setattr(message, "page_size", 1)  # noqa: B010 - a field of several request types
            setattr(message, "page_token", token)  # noqa: B010
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
