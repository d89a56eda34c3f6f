"""ppos-node-agent against a plane that requires mutual TLS: with --ca-file,
--cert-file and --key-file it enrolls and registers its node; with the CA alone
it cannot connect (it retries, saying so, until --duration) and nothing is
enrolled."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as pb_grpc
from ppos.nodeagent.cli import build_parser, run
from tests.support.servers import RunningPlane

pytestmark = pytest.mark.timeout(90)


def _agent(plane: RunningPlane, token_file: str, *tls: str) -> int:
    args = build_parser().parse_args(
        [
            "--address",
            plane.address,
            "--enroll",
            "--token-file",
            token_file,
            "--region",
            "eu-west-1",
            "--image",
            "registry.example/worker:1",
            "--duration",
            "2s",
            "--timeout",
            "3s",
            *tls,
        ]
    )
    return run(args, threading.Event())


async def _nodes(plane: RunningPlane) -> list[str]:
    reply = await pb_grpc.NodeRegistryServiceStub(plane.channel).ListNodes(
        pb.ListNodesRequest(), metadata=plane.operator, timeout=10
    )
    return [node.node_id for node in reply.nodes]


async def test_the_agent_enrolls_over_mutual_tls(
    mtls_plane: RunningPlane,
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tls = mtls_plane.tls
    assert tls is not None
    token_file = tmp_path_factory.mktemp("agent") / "token"  # outside the scanned tree
    token_file.write_text(mtls_plane.token + "\n")
    token_file.chmod(0o600)
    ca = ["--ca-file", str(tls.ca_file)]
    await asyncio.to_thread(_agent, mtls_plane, str(token_file), *ca)
    assert "control plane unreachable (UNAVAILABLE)" in capsys.readouterr().out
    assert await _nodes(mtls_plane) == []
    mutual = [*ca, "--cert-file", str(tls.client_cert), "--key-file", str(tls.client_key)]
    assert await asyncio.to_thread(_agent, mtls_plane, str(token_file), *mutual) == 0
    assert len(await _nodes(mtls_plane)) == 1
