"""Simulated regional preflight gateway (filled in by the governance work)."""

from __future__ import annotations

import argparse

import grpc

from ppos.preflight.v1 import gateway_service_pb2_grpc as pb_grpc

SERVICE_NAME = "ppos.preflight.v1.PreflightGatewayService"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument_group("gateway")


def register(server: grpc.aio.Server, args: argparse.Namespace) -> None:
    pb_grpc.add_PreflightGatewayServiceServicer_to_server(
        pb_grpc.PreflightGatewayServiceServicer(),  # type: ignore[abstract]  # issue 5
        server,
    )
