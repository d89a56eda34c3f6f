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
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ppos.controlplane.core.logging import configure_logging, get_logger
from ppos.controlplane.runtime.peers import gateway_audience, registry_audience
from ppos.controlplane.security.tokens import TokenVerifier
from ppos.preflightsim import gateway, registry
from ppos.preflightsim.auth import (
    MetadataLog,
    RefreshingJwks,
    RequirePreflightJwt,
    jwks_from_file,
    jwks_from_service,
)


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
    parser.add_argument("--issuer", default="ppos-control-plane", help="expected iss")
    parser.add_argument(
        "--record-metadata",
        type=Path,
        default=None,
        help="append every received call's metadata to this JSON-lines file",
    )
    parser.add_argument("--log-level", default="info")
    registry.add_arguments(parser)
    gateway.add_arguments(parser)
    return parser


async def serve(args: argparse.Namespace) -> int:
    log = get_logger("ppos.preflightsim")
    load = jwks_from_file(args.jwks_file) if args.jwks_file else jwks_from_service(args.jwks_from)
    keys = await asyncio.to_thread(RefreshingJwks, load)
    verifier = TokenVerifier(keys, issuer=args.issuer)
    metadata_log = MetadataLog(args.record_metadata)
    registry_server = grpc.aio.server(
        interceptors=[_ByService(verifier, args.region, metadata_log)]
    )
    registry.register(registry_server, args)
    gateway.register(registry_server, args)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, registry_server)
    reflection.enable_server_reflection(
        (
            registry.SERVICE_NAME,
            gateway.SERVICE_NAME,
            reflection.SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        ),
        registry_server,
    )
    port = registry_server.add_insecure_port(args.listen)
    if port == 0:
        print(f"ppos-preflight-sim: cannot listen on {args.listen}", file=sys.stderr)
        return 1
    await registry_server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    log.info("preflightsim.started", region=args.region, port=port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await health_servicer.enter_graceful_shutdown()
    await registry_server.stop(2)
    return 0


class _ByService(RequirePreflightJwt):
    """One interceptor, two audiences: the registry's and the gateway's."""

    def __init__(self, verifier: TokenVerifier, region: str, metadata_log: MetadataLog) -> None:
        super().__init__(verifier, registry_audience(region), metadata_log)
        self._gateway = RequirePreflightJwt(verifier, gateway_audience(region), metadata_log)

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        if handler_call_details.method.startswith(f"/{gateway.SERVICE_NAME}/"):
            return await self._gateway.intercept_service(continuation, handler_call_details)
        return await super().intercept_service(continuation, handler_call_details)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(level=args.log_level)
    return asyncio.run(serve(args))


if __name__ == "__main__":
    raise SystemExit(main())
