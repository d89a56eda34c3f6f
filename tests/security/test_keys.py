"""Signing keys: generated once with private permissions, rotated with overlap,
published as a JWKS (file and RPC) that verifies but cannot mint."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization

from ppos.controlplane.auth.v1 import jwks_service_pb2, jwks_service_pb2_grpc
from ppos.controlplane.core.logging import SecretRegistry
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as pb_grpc
from ppos.controlplane.security.claims import TokenRejected, request_sha256
from ppos.controlplane.security.keys import JwksKeySource, KeyRing, new_private_key, thumbprint
from ppos.controlplane.security.tokens import TokenVerifier
from ppos.preflightsim.jwks import RefreshingJwks, jwks_from_file
from tests.support.servers import RunningPlane, start_plane, stop_plane

NODE_REGISTRY = "ppos.controlplane.noderegistry.v1.NodeRegistryService"
GET_NODE = f"/{NODE_REGISTRY}/GetNode"


MISSING = pb.GetNodeRequest(node_id="node_missing")


def _peer_token(plane: RunningPlane) -> str:
    return str(
        plane.runtime.minter.mint_preflight(
            subject="ppos.controlplane.governance",
            audience=NODE_REGISTRY,
            method=GET_NODE,
            request_id="req_keys",
            request_sha256=request_sha256(MISSING.SerializeToString()),
        )
    )


async def _get_node(plane: RunningPlane, token: str) -> grpc.StatusCode:
    stub = pb_grpc.NodeRegistryServiceStub(plane.channel)
    try:
        await stub.GetNode(MISSING, metadata=(("authorization", f"Bearer {token}"),))
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_generated_key_is_private_and_stable(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    ring = KeyRing.from_directory(key_dir)
    pem = key_dir / f"{ring.active.kid}.pem"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    assert ring.active.kid == thumbprint(ring.active.public_key)
    again = KeyRing.from_directory(key_dir)
    assert again.active.kid == ring.active.kid, "a restart must keep the same key"
    published = ring.jwks_json()
    assert '"d"' not in published
    assert "PRIVATE" not in published


def test_jwks_entries_whose_kid_lies_are_ignored(tmp_path: Path) -> None:
    ring = KeyRing.from_directory(tmp_path / "keys")
    document = ring.jwks()
    document["keys"][0]["kid"] = "not-the-thumbprint"
    assert JwksKeySource(document).kids == []


async def test_rotation_keeps_old_tokens_valid_for_the_overlap(
    database_url: str, tmp_path: Path, canary_token: str, secret_registry: SecretRegistry
) -> None:
    plane = await start_plane(
        token=canary_token,
        database_url=database_url,
        data_dir=tmp_path / "data",
        secrets=secret_registry,
        extra_env={"PPOS_KEY_OVERLAP": "1s"},
    )
    try:
        old_kid = plane.runtime.keyring.active.kid
        old_token = _peer_token(plane)
        assert await _get_node(plane, old_token) == grpc.StatusCode.NOT_FOUND  # accepted

        new_kid = KeyRing.rotate(plane.data_dir / "keys")
        assert plane.server.reload_keys()
        assert plane.runtime.keyring.active.kid == new_kid != old_kid

        stub = jwks_service_pb2_grpc.JwksServiceStub(plane.channel)
        reply = await stub.GetJwks(jwks_service_pb2.GetJwksRequest())
        assert reply.active_kid == new_kid
        assert {k["kid"] for k in json.loads(reply.jwks_json)["keys"]} == {old_kid, new_kid}
        on_disk = json.loads((plane.data_dir / "jwks.json").read_text())
        assert {k["kid"] for k in on_disk["keys"]} == {old_kid, new_kid}

        assert await _get_node(plane, old_token) == grpc.StatusCode.NOT_FOUND  # overlap
        assert await _get_node(plane, _peer_token(plane)) == grpc.StatusCode.NOT_FOUND

        await asyncio.sleep(1.2)  # let the overlap window pass
        assert plane.server.reload_keys()
        assert await _get_node(plane, old_token) == grpc.StatusCode.UNAUTHENTICATED
        reply = await stub.GetJwks(jwks_service_pb2.GetJwksRequest())
        assert {k["kid"] for k in json.loads(reply.jwks_json)["keys"]} == {new_kid}
    finally:
        await stop_plane(plane)


def test_receivers_refresh_the_jwks_on_an_unknown_kid(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    ring = KeyRing.from_directory(key_dir)
    jwks = tmp_path / "jwks.json"
    ring.write_jwks(jwks)
    receiver = RefreshingJwks(jwks_from_file(jwks), refresh_interval=0)
    assert receiver.key_or_reload(ring.active.kid) is not None

    new_kid = KeyRing.rotate(key_dir)
    assert receiver.key_or_reload(new_kid) is None, "not published yet"
    KeyRing.from_directory(key_dir).write_jwks(jwks)
    assert receiver.key_or_reload(new_kid) is not None


def test_a_single_key_file_with_extra_verification_keys(tmp_path: Path) -> None:
    private = new_private_key()
    key_file = tmp_path / "signing.pem"
    key_file.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    previous = KeyRing.from_directory(tmp_path / "old")
    extra = JwksKeySource(previous.jwks())
    ring = KeyRing.from_file(key_file, extra=extra)
    assert ring.active.kid == thumbprint(private.public_key())
    assert ring.public_key(previous.active.kid) is not None

    from ppos.controlplane.security.tokens import TokenMinter

    old_token = TokenMinter(previous, issuer="ppos-control-plane").mint_preflight(
        subject="s", audience="a", method="/m", request_id="r"
    )
    verifier = TokenVerifier(ring, issuer="ppos-control-plane")
    assert verifier.verify_preflight(old_token, audience="a", method="/m").subject == "s"
    with pytest.raises(TokenRejected) as rejected:
        TokenVerifier(KeyRing.from_file(key_file), issuer="ppos-control-plane").verify_preflight(
            old_token, audience="a", method="/m"
        )
    assert rejected.value.reason == "unknown_key"
