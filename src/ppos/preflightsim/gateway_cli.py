"""The simulated gateway's command line: its faults and its record file, and
registering it on the simulator's server."""

from __future__ import annotations

import argparse
from pathlib import Path

import grpc

from ppos.preflight.v1 import gateway_service_pb2_grpc as pb_grpc
from ppos.preflightsim.gateway import SimulatedGateway
from ppos.preflightsim.gateway_state import GatewayFaults


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("gateway")
    group.add_argument(
        "--gateway-record",
        type=Path,
        default=None,
        metavar="FILE.jsonl",
        help="append every gateway call received (method, key, request, outcome) to this file",
    )
    group.add_argument(
        "--gateway-unavailable-rate",
        type=float,
        default=0.0,
        help="fraction of gateway calls answered UNAVAILABLE (0 to 1)",
    )
    group.add_argument(
        "--gateway-unavailable-first",
        type=int,
        default=0,
        metavar="N",
        help="answer the first N gateway calls UNAVAILABLE",
    )
    group.add_argument(
        "--gateway-slow",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="delay every gateway answer by this long",
    )
    group.add_argument(
        "--gateway-slow-ack",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="act on each gateway command at once, then delay its answer by this long",
    )
    group.add_argument(
        "--gateway-refuse-first",
        type=int,
        default=0,
        metavar="N",
        help="refuse the first N gateway commands with INVALID_ARGUMENT",
    )
    group.add_argument(
        "--gateway-drop-rate",
        type=float,
        default=0.0,
        help="fraction of gateway commands acted on whose answer is then dropped",
    )
    group.add_argument(
        "--gateway-unreachable-partner",
        action="append",
        default=[],
        metavar="PARTNER",
        help="answer commands that hand work to this partner PARTNER_UNREACHABLE (repeatable)",
    )
    group.add_argument("--gateway-seed", type=int, default=None, help="seed of the fault dice")


def faults_from(args: argparse.Namespace) -> GatewayFaults:
    for name in ("gateway_unavailable_rate", "gateway_drop_rate"):
        if not 0 <= getattr(args, name, 0.0) <= 1:
            raise ValueError(f"--{name.replace('_', '-')} must be between 0 and 1")
    return GatewayFaults(
        unavailable_rate=getattr(args, "gateway_unavailable_rate", 0.0),
        unavailable_next=getattr(args, "gateway_unavailable_first", 0),
        slow_seconds=getattr(args, "gateway_slow", 0.0),
        slow_ack_seconds=getattr(args, "gateway_slow_ack", 0.0),
        drop_rate=getattr(args, "gateway_drop_rate", 0.0),
        refuse_next=getattr(args, "gateway_refuse_first", 0),
        unreachable_partners=set(getattr(args, "gateway_unreachable_partner", None) or ()),
    )


def register(server: grpc.aio.Server, args: argparse.Namespace) -> SimulatedGateway:
    gateway = SimulatedGateway(
        args.region,
        faults=faults_from(args),
        record_path=getattr(args, "gateway_record", None),
        seed=getattr(args, "gateway_seed", None),
    )
    pb_grpc.add_PreflightGatewayServiceServicer_to_server(gateway, server)
    return gateway
