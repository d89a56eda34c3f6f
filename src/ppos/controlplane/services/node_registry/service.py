"""NodeRegistryService: the servicer, and the module the composition root hosts.

The servicer is one part per concern (enrollment, node-facing, operator,
commands, watch), each handed what it uses; every method is delegated to the
part that implements it. The module owns the background work: the watch hub,
the scheduled health sweep, and on PostgreSQL the LISTEN connection.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import message_factory

from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.services.node_registry.changelog import COMMANDS_CHANNEL, NOTIFY_CHANNEL
from ppos.controlplane.services.node_registry.deps import NodeRegistryDeps
from ppos.controlplane.services.node_registry.health_sweep import HealthSweeper
from ppos.controlplane.services.node_registry.heartbeats import HeartbeatBatcher
from ppos.controlplane.services.node_registry.hub import WatchHub
from ppos.controlplane.services.node_registry.listener import PgListener
from ppos.controlplane.services.node_registry.rpc_base import SERVICE
from ppos.controlplane.services.node_registry.rpc_commands import CommandRpcs
from ppos.controlplane.services.node_registry.rpc_enrollment import EnrollmentRpcs
from ppos.controlplane.services.node_registry.rpc_node import NodeRpcs
from ppos.controlplane.services.node_registry.rpc_operator import OperatorRpcs
from ppos.controlplane.services.node_registry.rpc_watch import WatchRpcs
from ppos.controlplane.services.node_registry.signals import CommandSignals
from ppos.controlplane.services.node_registry.unit_of_work import NodeWrites

SERVICE_NAME = "ppos.controlplane.noderegistry.v1.NodeRegistryService"
# Methods whose handlers send pre-encoded response bytes as they are.
RAW_RESPONSE_METHODS = frozenset({"WatchNodes"})


def servicer_parts(
    deps: NodeRegistryDeps,
    hub: WatchHub,
    signals: CommandSignals,
    sweeper: HealthSweeper,
    heartbeats: HeartbeatBatcher,
) -> tuple[object, ...]:
    """The parts of the servicer, one per concern, each handed what it uses."""
    write = NodeWrites(deps.db, hub)
    return (
        EnrollmentRpcs(deps, write),
        NodeRpcs(deps, write, heartbeats, signals),
        OperatorRpcs(deps, write, sweeper),
        CommandRpcs(deps, write, signals),
        WatchRpcs(hub),
    )


def method_handlers(parts: tuple[object, ...]) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    """Handlers for every method of the service, from its descriptor, each delegated to
    the one part that implements it.

    Like the generated `add_...Servicer_to_server`, except that WatchNodes has no
    response serializer: its handler writes WatchNodesResponse bytes encoded
    once per change (see `watch_encoding`), which gRPC sends unchanged.
    """
    service = pb.DESCRIPTOR.services_by_name["NodeRegistryService"]
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        serializer = None if method.name in RAW_RESPONSE_METHODS else response.SerializeToString
        owners = [part for part in parts if hasattr(part, method.name)]
        if len(owners) != 1:
            raise TypeError(f"{method.name}: implemented by {len(owners)} parts, not one")
        behaviour = getattr(owners[0], method.name)
        if method.client_streaming:
            raise NotImplementedError(f"{method.name}: client streaming is not used")
        factory = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = factory(
            behaviour,
            request_deserializer=request.FromString,
            response_serializer=serializer,
        )
    return handlers


class NodeRegistryModule:
    name = SERVICE
    service_names: tuple[str, ...] = (SERVICE_NAME,)

    def __init__(self, deps: NodeRegistryDeps) -> None:
        self._deps = deps
        self.hub = WatchHub(deps.db, deps.settings, deps.shutdown)
        self.signals = CommandSignals()
        self.sweeper = HealthSweeper(deps.db, deps.settings, self.hub.poke)
        self.heartbeats = HeartbeatBatcher(deps.db, self.hub.offer)
        self._listener: PgListener | None = None

    def register(self, server: grpc.aio.Server) -> None:
        handlers = method_handlers(
            servicer_parts(self._deps, self.hub, self.signals, self.sweeper, self.heartbeats)
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),)
        )
        server.add_registered_method_handlers(SERVICE_NAME, handlers)

    async def start(self) -> None:
        await self.hub.start()
        if self._deps.db.is_postgres:
            self._listener = PgListener(
                self._deps.database_url,
                {
                    NOTIFY_CHANNEL: self.hub.notified,
                    COMMANDS_CHANNEL: self.signals.poke,
                },
            )
            self._listener.start()
        self.sweeper.start()

    async def stop(self) -> None:
        self.hub.close()
        await self.sweeper.stop()
        if self._listener is not None:
            await self._listener.stop()
        await self.hub.stop()
