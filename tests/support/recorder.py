"""A gRPC peer that records every call's metadata: stands in for a downstream
receiver when a test must prove what leaves the process."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc


@dataclass
class RecordedCall:
    method: str
    metadata: tuple[tuple[str, Any], ...]


@dataclass
class Recorder:
    calls: list[RecordedCall] = field(default_factory=list)
    server: grpc.aio.Server | None = None
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        recorder = self

        class _Handler(grpc.GenericRpcHandler):
            def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
                method = details.method

                async def unary(request: bytes, context: Any) -> bytes:
                    recorder.calls.append(
                        RecordedCall(method, tuple(context.invocation_metadata() or ()))
                    )
                    return b""

                return grpc.unary_unary_rpc_method_handler(unary)

        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((_Handler(),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)
