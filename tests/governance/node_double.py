"""A stand-in for NodeRegistryService for admin-job takeover tests: the nodes of a
rollout, and a ReimageNode that takes `step_seconds` and remembers every call.

Like the real registry it answers a repeated idempotency key with the first
command (a replay, no new effect), behind the same PREFLIGHT_JWT check, so a
rollout runs over the real contract and channel while the test sees each step
sent (`calls`) and each step's effect (`commands`, one per key).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc

from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as pb_grpc
from ppos.controlplane.security.peers import SERVICE_AUDIENCE
from ppos.preflightsim.auth import RequirePreflightJwt
from ppos.preflightsim.preflight_jwt import PreflightJwtVerifier


@dataclass
class NodeDouble(pb_grpc.NodeRegistryServiceServicer):
    node_ids: list[str]
    region: str
    image: str
    step_seconds: float = 0.1
    calls: Counter[str] = field(default_factory=Counter)  # node id -> ReimageNode calls
    commands: dict[str, str] = field(default_factory=dict)  # idempotency key -> command id

    async def ListNodes(self, request: pb.ListNodesRequest, context: Any) -> pb.ListNodesResponse:
        wanted = request.filter
        if wanted.region != self.region or wanted.container_image not in ("", self.image):
            return pb.ListNodesResponse()
        after = request.page_token
        size = request.page_size or 100
        page = [n for n in self.node_ids if n > after][:size]
        more = bool(page) and page[-1] != self.node_ids[-1]
        return pb.ListNodesResponse(
            nodes=[node_pb2.Node(node_id=n) for n in page],
            next_page_token=page[-1] if more else "",
        )

    async def ReimageNode(
        self, request: pb.ReimageNodeRequest, context: Any
    ) -> pb.ReimageNodeResponse:
        self.calls[request.node_id] += 1
        await asyncio.sleep(self.step_seconds)
        key = request.idempotency_key
        command_id = self.commands.setdefault(key, f"cmd-{len(self.commands) + 1}")
        return pb.ReimageNodeResponse(
            command=node_pb2.NodeCommand(command_id=command_id, node_id=request.node_id)
        )

    def resent(self) -> int:
        """Steps sent more than once (each a replay of its key, no second effect)."""
        return sum(count - 1 for count in self.calls.values())


@dataclass
class RunningNodeDouble:
    double: NodeDouble
    server: grpc.aio.Server
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


async def start_node_double(
    verifier: PreflightJwtVerifier, double: NodeDouble
) -> RunningNodeDouble:
    server = grpc.aio.server(
        interceptors=[RequirePreflightJwt(verifier, SERVICE_AUDIENCE["noderegistry"])]
    )
    pb_grpc.add_NodeRegistryServiceServicer_to_server(double, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return RunningNodeDouble(double, server, port)
