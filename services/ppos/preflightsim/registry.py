"""Simulated regional preflight registry (filled in by the registry sync work)."""

from __future__ import annotations

import argparse

import grpc

from ppos.preflight.v1 import registry_service_pb2_grpc as pb_grpc

SERVICE_NAME = "ppos.preflight.v1.PreflightRegistryService"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("registry")
    group.add_argument(
        "--records",
        action="append",
        default=[],
        metavar="FILE.jsonl",
        help="JSON Lines files of job records to serve, in feed order",
    )


def register(server: grpc.aio.Server, args: argparse.Namespace) -> None:
    pb_grpc.add_PreflightRegistryServiceServicer_to_server(
        pb_grpc.PreflightRegistryServiceServicer(),  # type: ignore[abstract]  # issue 4
        server,
    )
