"""Where outbox commands go: regional gateways and the node registry.

Every channel carries a PREFLIGHT_JWT minted per call for its receiver: the
gateway of a region (audience `.../PreflightGatewayService/<region>`) or the
node registry service. Nothing else is forwarded.
"""

from __future__ import annotations

from typing import Any

import grpc

from ppos.controlplane.core.settings import ConfigError
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as nr_pb
from ppos.controlplane.security.outbound import open_channel
from ppos.controlplane.security.peers import caller_identity, gateway_audience
from ppos.controlplane.services.governance.deps import GovernanceDeps
from ppos.controlplane.services.governance.outbox.commands import (
    GATEWAY_SERVICE,
    NODE_REGISTRY_SERVICE,
    NODE_REGISTRY_TARGET,
)
from ppos.controlplane.services.governance.peers import PeerStubs
from ppos.preflight.v1 import gateway_service_pb2 as gw_pb

SERVICE = "governance"

# Response type of every method a command may call, and how to read its ack:
# (receiver's id for the command, whether it was a duplicate).
RESPONSES: dict[str, Any] = {
    f"/{GATEWAY_SERVICE}/RetryJob": gw_pb.RetryJobResponse,
    f"/{GATEWAY_SERVICE}/RerouteJob": gw_pb.RerouteJobResponse,
    f"/{GATEWAY_SERVICE}/RequestRemainder": gw_pb.RequestRemainderResponse,
    f"/{GATEWAY_SERVICE}/RouteJobToReview": gw_pb.RouteJobToReviewResponse,
    f"/{GATEWAY_SERVICE}/ApplyQueuePolicy": gw_pb.ApplyQueuePolicyResponse,
    f"/{GATEWAY_SERVICE}/ApplyPartnerRoute": gw_pb.ApplyPartnerRouteResponse,
    f"/{NODE_REGISTRY_SERVICE}/ReimageNode": nr_pb.ReimageNodeResponse,
    f"/{NODE_REGISTRY_SERVICE}/CordonNode": nr_pb.CordonNodeResponse,
}


def read_ack(method: str, response: Any) -> tuple[str, bool]:
    """(receiver's command id, duplicate) from a response."""
    if method.startswith(f"/{GATEWAY_SERVICE}/"):
        return str(response.ack.command_id), bool(response.ack.duplicate)
    if method.endswith("/ReimageNode"):
        return str(response.command.command_id), bool(response.duplicate)
    if method.endswith("/CordonNode"):
        return f"node/{response.node.node_id}@{response.node.meta.resource_version}", False
    raise KeyError(method)


class NoReceiver(Exception):
    """No address is configured for a command's receiver (held, not failed)."""


class Receivers:
    """Channels to command receivers, opened lazily and cached."""

    def __init__(self, deps: GovernanceDeps) -> None:
        self._peers = PeerStubs(deps)
        self._minter = deps.minter
        self._tls = deps.peers.tls  # the plane's client identity, when TLS is on
        self._gateways = dict(deps.settings.gateways)
        self._channels: dict[str, grpc.aio.Channel] = {}
        # (target, method) -> (channel, its multi-callable): made once, not per call.
        self._calls: dict[tuple[str, str], tuple[grpc.aio.Channel, Any]] = {}

    @property
    def regions(self) -> list[str]:
        return sorted(self._gateways)

    def has_gateway(self, region: str) -> bool:
        return region in self._gateways

    def channel(self, target: str) -> grpc.aio.Channel:
        if target == NODE_REGISTRY_TARGET:
            try:
                return self._peers.channel("noderegistry")
            except ConfigError as exc:
                raise NoReceiver(str(exc)) from None
        kind, _, region = target.partition(":")
        if kind != "gateway" or not region:
            raise NoReceiver(f"unknown command target {target!r}")
        channel = self._channels.get(region)
        if channel is None:
            address = self._gateways.get(region)
            if not address:
                raise NoReceiver(
                    f"no gateway configured for region {region} (PPOS_GATEWAYS); "
                    "the command is held until one is"
                )
            channel = open_channel(
                address,
                self._minter,
                audience=gateway_audience(region),
                subject=caller_identity(SERVICE),
                tls=self._tls,
            )
            self._channels[region] = channel
        return channel

    async def call(self, target: str, method: str, payload: bytes, deadline: float) -> Any:
        """Send the stored request bytes unchanged; the typed response comes back."""
        response_type = RESPONSES.get(method)
        if response_type is None:
            raise NoReceiver(f"no receiver knows method {method}")
        channel = self.channel(target)
        made = self._calls.get((target, method))
        if made is None or made[0] is not channel:
            call: Any = channel.unary_unary(
                method, request_serializer=None, response_deserializer=response_type.FromString
            )
            made = self._calls[(target, method)] = (channel, call)
        return await made[1](payload, timeout=deadline)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self._calls.clear()
