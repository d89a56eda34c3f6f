"""`ppos-preflight-sim`: serve a simulated regional registry and gateway.

Both refuse every call without a PREFLIGHT_JWT minted by the control plane
for their audience (`.../PreflightRegistryService/<region>`,
`.../PreflightGatewayService/<region>`) and the method called.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ppos.preflightsim import gateway, gateway_cli, registry, tls
from ppos.preflightsim.auth import (
    MetadataLog,
    RequirePreflightJwt,
    gateway_audience,
    registry_audience,
)
from ppos.preflightsim.faultproxy import FaultProxy
from ppos.preflightsim.faults import FaultConfigError
from ppos.preflightsim.jwks import RefreshingJwks, jwks_from_file, jwks_from_service
from ppos.preflightsim.logs import configure_logging, get_logger
from ppos.preflightsim.preflight_jwt import PreflightJwtVerifier
from ppos.preflightsim.records import RecordFileError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppos-preflight-sim",
        description="Simulated regional preflight registry and gateway (a test double).",
    )
    parser.add_argument("--listen", default="127.0.0.1:7001", help="host:port to serve on")
    parser.add_argument("--region", required=True, help="region this registry serves")
    keys = parser.add_mutually_exclusive_group(required=True)
    keys.add_argument("--jwks-file", type=Path, help="the control plane's published jwks.json")
    keys.add_argument(
        "--jwks-from",
        metavar="HOST:PORT",
        help="fetch the JWKS from the control plane's JwksService",
    )
    parser.add_argument(
        "--jwks-refresh-interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="least time between two loads of the JWKS for unknown kids (a key rotation)",
    )
    parser.add_argument("--issuer", default="ppos-control-plane", help="expected iss")
    parser.add_argument(
        "--record-metadata",
        type=Path,
        default=None,
        help="append every received call's metadata to this JSON-lines file",
    )
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--port-file",
        type=Path,
        default=None,
        help="write the port served on into this file once ready (for --listen HOST:0)",
    )
    registry.add_arguments(parser)
    gateway_cli.add_arguments(parser)
    tls.add_arguments(parser)
    return parser


class StartError(Exception):
    """The simulator cannot start; the message says why."""


@dataclass
class RunningSimulator:
    """A started simulator: its server, port, registry and (optional) fault proxy."""

    server: grpc.aio.Server
    health: health.aio.HealthServicer
    registry: registry.RegistrySimulator
    port: int
    proxy: FaultProxy | None = None
    gateway: gateway.SimulatedGateway | None = None

    async def stop(self, grace: float = 2.0) -> None:
        await self.health.enter_graceful_shutdown()
        if self.proxy is not None:
            await self.proxy.stop()
        await self.server.stop(grace)


async def start(args: argparse.Namespace) -> RunningSimulator:
    """Load the records, bind, start serving. Raises StartError with a reason."""
    problem = tls.check_arguments(args)
    if problem is not None:
        raise StartError(problem)
    load = (
        jwks_from_file(args.jwks_file)
        if args.jwks_file
        else jwks_from_service(args.jwks_from, credentials=tls.channel_credentials(args))
    )
    try:
        keys = await asyncio.to_thread(
            RefreshingJwks, load, refresh_interval=args.jwks_refresh_interval
        )
    except (OSError, ValueError, grpc.RpcError) as exc:
        raise StartError(f"cannot load the control plane's JWKS: {exc}") from None
    verifier = PreflightJwtVerifier(keys, issuer=args.issuer)
    metadata_log = MetadataLog(args.record_metadata)
    server = grpc.aio.server(interceptors=[_ByService(verifier, args.region, metadata_log)])
    try:
        simulator = await asyncio.to_thread(registry.build, args)
    except (RecordFileError, FaultConfigError, OSError) as exc:
        raise StartError(str(exc)) from None
    server.add_generic_rpc_handlers((simulator.handler(),))
    gateway_simulator = gateway_cli.register(server, args)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            registry.SERVICE_NAME,
            gateway.SERVICE_NAME,
            reflection.SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        ),
        server,
    )
    proxy: FaultProxy | None = None
    if args.fault_proxy:
        # The proxy takes the public address; gRPC listens privately behind it.
        proxy = FaultProxy(_add_port(server, "127.0.0.1:0", args))
        simulator.proxy = proxy
        await server.start()
        host, _, port_text = args.listen.rpartition(":")
        try:
            port = await proxy.start(host.strip("[]"), int(port_text))
        except (OSError, ValueError):
            port = 0
    else:
        port = _add_port(server, args.listen, args)
        if port:
            await server.start()
    if port == 0:
        await server.stop(0)
        raise StartError(f"cannot listen on {args.listen}")
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return RunningSimulator(server, health_servicer, simulator, port, proxy, gateway_simulator)


def _add_port(server: grpc.aio.Server, address: str, args: argparse.Namespace) -> int:
    credentials = tls.server_credentials(args)
    if credentials is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, credentials)


async def serve(args: argparse.Namespace) -> int:
    log = get_logger("ppos.preflightsim")
    try:
        running = await start(args)
    except StartError as exc:
        print(f"ppos-preflight-sim: {exc}", file=sys.stderr)
        return 2
    log.info(
        "preflightsim.started",
        region=args.region,
        port=running.port,
        changes=len(running.registry.feed),
        fault_proxy=running.proxy is not None,
    )
    if args.port_file is not None:
        tmp = args.port_file.with_name(args.port_file.name + ".tmp")
        tmp.write_text(f"{running.port}\n")
        tmp.replace(args.port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await running.stop()
    log.info("preflightsim.stopped", calls=running.registry.calls)
    return 0


class _ByService(RequirePreflightJwt):
    """One interceptor, two audiences: the registry's and the gateway's."""

    def __init__(
        self, verifier: PreflightJwtVerifier, region: str, metadata_log: MetadataLog
    ) -> None:
        super().__init__(verifier, registry_audience(region), metadata_log)
        self._gateway = RequirePreflightJwt(verifier, gateway_audience(region), metadata_log)

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        if handler_call_details.method.startswith(f"/{gateway.SERVICE_NAME}/"):
            return await self._gateway.intercept_service(continuation, handler_call_details)
        return await super().intercept_service(continuation, handler_call_details)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    return asyncio.run(serve(args))


if __name__ == "__main__":
    raise SystemExit(main())
