"""Calls spread over every replica behind one name: the client library's and the
plane's peer channels balance round-robin over all resolved addresses instead of
pinning a long-lived client to one connection (one pod behind a ClusterIP)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from ppos.controlplane.client import ControlPlane
from ppos.controlplane.client.config import load_config
from ppos.controlplane.client.errors import ControlPlaneError
from ppos.controlplane.core.logging import SecretRegistry
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as pb_grpc
from ppos.controlplane.security.outbound import CHANNEL_OPTIONS
from tests.support.servers import RunningPlane, start_plane, stop_plane

CALLS = 20
WRONG = "ppos_wrong-token-for-counting-arrivals-0000000000"


def _port(plane: RunningPlane) -> str:
    return plane.address.rsplit(":", 1)[1]


async def test_calls_land_on_every_replica_behind_one_target(
    database_url: str, tmp_path: Path, canary_token: str, secret_registry: SecretRegistry
) -> None:
    planes = [
        await start_plane(
            token=canary_token,
            database_url=database_url,
            data_dir=tmp_path / "data",
            secrets=secret_registry,
        )
        for _ in range(2)
    ]
    try:
        # One name, two addresses: what a headless Service's DNS name gives.
        target = "ipv4:" + ",".join(f"127.0.0.1:{_port(p)}" for p in planes)

        # The client library (pposctl, operators' scripts): one connection object,
        # every call refused at the edge of whichever replica it reached.
        def library_calls() -> None:
            config = load_config({"PPOS_ADDRESS": target, "PPOS_CONTROL_TOKEN": WRONG})
            with ControlPlane(config) as cp:
                for _ in range(CALLS):
                    with pytest.raises(ControlPlaneError):
                        cp.nodes.list_nodes_page()

        await asyncio.to_thread(library_calls)
        arrived = [len(p.auth_failures) for p in planes]
        assert sum(arrived) == CALLS
        assert min(arrived) >= CALLS // 4, f"calls not spread: {arrived}"

        # The plane's own peer channels use the same balancing options.
        for plane in planes:
            plane.auth_failures.clear()
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
            stub = pb_grpc.NodeRegistryServiceStub(channel)
            for _ in range(CALLS):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.ListNodes(pb.ListNodesRequest())
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        arrived = [len(p.auth_failures) for p in planes]
        assert sum(arrived) == CALLS
        assert min(arrived) >= CALLS // 4, f"peer calls not spread: {arrived}"
    finally:
        for plane in planes:
            await stop_plane(plane)
