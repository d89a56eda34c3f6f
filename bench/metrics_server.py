"""Server side of the metrics benchmark: Relay -> Echo over a loopback channel,
registered bare (`plain`) or through the RPC metrics wrapper (`metered`)."""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import grpc

from bench.auth_server import BACK, ECHO, FRONT
from ppos.controlplane.core.logging import configure_logging
from ppos.controlplane.runtime.observability import MeteredServer


async def serve(mode: str, port: int) -> None:
    address = f"127.0.0.1:{port}"
    server = grpc.aio.server()
    registrar: grpc.aio.Server = MeteredServer(server) if mode == "metered" else server
    channel = grpc.aio.insecure_channel(address)
    echo_call = channel.unary_unary(ECHO)

    async def relay(request: bytes, context: Any) -> bytes:
        reply: bytes = await echo_call(request, timeout=10)
        return reply

    async def echo(request: bytes, context: Any) -> bytes:
        return request

    registrar.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                FRONT, {"Relay": grpc.unary_unary_rpc_method_handler(relay)}
            ),
            grpc.method_handlers_generic_handler(
                BACK, {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
            ),
        )
    )
    server.add_insecure_port(address)
    await server.start()
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)
    await channel.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["plain", "metered"], required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    configure_logging(level="info", fmt="json")
    asyncio.run(serve(args.mode, args.port))


if __name__ == "__main__":
    main()
