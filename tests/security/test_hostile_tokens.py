"""Hostile credentials at the edge: each refused with the right status, before
any handler runs, with nothing changed in the database and nothing echoed.

Runs against a real server on SQLite and on PostgreSQL (the `plane` fixture).
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from google.rpc import error_details_pb2

from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as pb_grpc
from ppos.controlplane.security.claims import NODE_TYP, PREFLIGHT_TYP, request_sha256
from ppos.controlplane.security.keys import PrivateKey, new_private_key, thumbprint
from tests.support import forge
from tests.support.dbstate import row_counts
from tests.support.nodes import DIGEST, IMAGE, EnrolledNode, enroll_node
from tests.support.servers import RunningPlane

NODE_REGISTRY = "ppos.controlplane.noderegistry.v1.NodeRegistryService"
SYNC = "ppos.controlplane.registrysync.v1.RegistrySyncService"
GET_NODE = f"/{NODE_REGISTRY}/GetNode"
LIST_NODES = f"/{NODE_REGISTRY}/ListNodes"
CREATE_ENROLLMENT = f"/{NODE_REGISTRY}/CreateEnrollment"
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED

Metadata = tuple[tuple[str, str], ...]


@dataclass
class Ctx:
    plane: RunningPlane
    node: EnrolledNode
    key: PrivateKey
    kid: str

    @property
    def token(self) -> str:
        return self.plane.token

    def peer(self, audience: str = NODE_REGISTRY, method: str = GET_NODE, **claims: Any) -> str:
        return forge.sign(
            self.key, self.kid, forge.peer_claims(audience, method, **claims), typ=PREFLIGHT_TYP
        )

    def node_token(self, **claims: Any) -> str:
        return forge.sign(
            self.key, self.kid, forge.node_claims(self.node.node_id, 1, **claims), typ=NODE_TYP
        )

    @property
    def public_raw(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def bearer(value: str) -> Metadata:
    return (("authorization", f"Bearer {value}"),)


def _other_key_same_kid(ctx: Ctx) -> str:
    return forge.sign(
        new_private_key(),
        ctx.kid,
        forge.peer_claims(NODE_REGISTRY, GET_NODE),
        typ=PREFLIGHT_TYP,
    )


def _unknown_kid(ctx: Ctx) -> str:
    other = new_private_key()
    return forge.sign(
        other,
        thumbprint(other.public_key()),
        forge.peer_claims(NODE_REGISTRY, GET_NODE),
        typ=PREFLIGHT_TYP,
    )


def _replayed_for_other_audience(ctx: Ctx) -> str:
    """A token the plane really minted for a call to the sync service."""
    return ctx.plane.runtime.minter.mint_preflight(
        subject="ppos.controlplane.governance",
        audience=SYNC,
        method=GET_NODE,
        request_id="req_captured",
    )


def _non_canonical_signature(ctx: Ctx) -> str:
    """Same signature bytes, different encoding (the unused low bits of the last char)."""
    token = ctx.peer()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    return token[:-1] + alphabet[last ^ 1]


def _high_s_twin(ctx: Ctx) -> str:
    """A valid peer token malleated: (r, n - s) verifies under plain ECDSA."""
    return forge.with_s(ctx.peer(), high=True)


def _padded(ctx: Ctx) -> str:
    header, payload, signature = ctx.peer().split(".")
    pad = "=" * (-len(payload) % 4) or "===="
    return f"{header}.{payload}{pad}.{signature}"


def _claims_not_an_object(ctx: Ctx) -> str:
    return forge.sign_raw(ctx.key, ctx.kid, b"[1,2,3]", typ=PREFLIGHT_TYP)


def _revoked_node_credential(ctx: Ctx) -> str:
    return ctx.node.credential  # the test renews first, which revokes this one


# (case id, target RPC, metadata builder, expected code)
CASES: list[tuple[str, str, Callable[[Ctx], Metadata], grpc.StatusCode]] = [
    ("no-header", "create_enrollment", lambda c: (), UNAUTH),
    ("empty-value", "create_enrollment", lambda c: (("authorization", ""),), UNAUTH),
    (
        "basic-scheme",
        "create_enrollment",
        lambda c: (("authorization", "Basic " + base64.b64encode(c.token.encode()).decode()),),
        UNAUTH,
    ),
    ("bearer-without-token", "create_enrollment", lambda c: (("authorization", "Bearer"),), UNAUTH),
    ("token-without-scheme", "create_enrollment", lambda c: (("authorization", c.token),), UNAUTH),
    ("token-prefix", "create_enrollment", lambda c: bearer(c.token[:-1]), UNAUTH),
    ("token-half", "create_enrollment", lambda c: bearer(c.token[: len(c.token) // 2]), UNAUTH),
    ("token-suffix", "create_enrollment", lambda c: bearer(c.token + "x"), UNAUTH),
    ("token-case-changed", "create_enrollment", lambda c: bearer(c.token.swapcase()), UNAUTH),
    (
        "double-space",
        "create_enrollment",
        lambda c: (("authorization", f"Bearer  {c.token}"),),
        UNAUTH,
    ),
    (
        "colon-after-scheme",
        "create_enrollment",
        lambda c: (("authorization", f"Bearer: {c.token}"),),
        UNAUTH,
    ),
    (
        "two-tokens-in-one-header",
        "create_enrollment",
        lambda c: (("authorization", f"Bearer {c.token}, Bearer {c.token}"),),
        UNAUTH,
    ),
    (
        "inner-whitespace",
        "create_enrollment",
        lambda c: bearer(c.token[:10] + " " + c.token[10:]),
        UNAUTH,
    ),
    (
        "other-header-name",
        "create_enrollment",
        lambda c: (("x-ppos-control-token", c.token),),
        UNAUTH,
    ),
    (
        "two-authorization-headers",
        "create_enrollment",
        lambda c: (("authorization", f"Bearer {c.token}"),) * 2,
        UNAUTH,
    ),
    ("huge-header", "create_enrollment", lambda c: bearer("A" * 7000), UNAUTH),
    (
        "alg-none",
        "get_node",
        lambda c: bearer(
            forge.unsigned(forge.peer_claims(NODE_REGISTRY, GET_NODE), kid=c.kid, typ=PREFLIGHT_TYP)
        ),
        UNAUTH,
    ),
    (
        "hs256-signed-with-public-key",
        "get_node",
        lambda c: bearer(
            forge.hs256_with_public_key(
                forge.peer_claims(NODE_REGISTRY, GET_NODE),
                c.public_raw,
                kid=c.kid,
                typ=PREFLIGHT_TYP,
            )
        ),
        UNAUTH,
    ),
    ("wrong-audience", "get_node", lambda c: bearer(c.peer(audience=SYNC)), UNAUTH),
    ("audience-list", "get_node", lambda c: bearer(c.peer(audience=[NODE_REGISTRY, SYNC])), UNAUTH),
    ("wrong-method", "get_node", lambda c: bearer(c.peer(method=LIST_NODES)), UNAUTH),
    (
        "expired",
        "get_node",
        lambda c: bearer(c.peer(iat=int(time.time()) - 600, exp=int(time.time()) - 540)),
        UNAUTH,
    ),
    (
        "future-iat",
        "get_node",
        lambda c: bearer(c.peer(iat=int(time.time()) + 600, exp=int(time.time()) + 660)),
        UNAUTH,
    ),
    (
        "lifetime-too-long",
        "get_node",
        lambda c: bearer(c.peer(exp=int(time.time()) + 86400)),
        UNAUTH,
    ),
    ("missing-exp", "get_node", lambda c: bearer(c.peer(exp=None)), UNAUTH),
    ("missing-method-claim", "get_node", lambda c: bearer(c.peer(mth=None)), UNAUTH),
    ("wrong-issuer", "get_node", lambda c: bearer(c.peer(iss="someone-else")), UNAUTH),
    ("unknown-kid", "get_node", lambda c: bearer(_unknown_kid(c)), UNAUTH),
    ("known-kid-other-key", "get_node", lambda c: bearer(_other_key_same_kid(c)), UNAUTH),
    (
        "non-canonical-signature-encoding",
        "get_node",
        lambda c: bearer(_non_canonical_signature(c)),
        UNAUTH,
    ),
    ("high-s-signature-twin", "get_node", lambda c: bearer(_high_s_twin(c)), UNAUTH),
    ("padded-segments", "get_node", lambda c: bearer(_padded(c)), UNAUTH),
    ("four-segments", "get_node", lambda c: bearer(c.peer() + ".e30"), UNAUTH),
    ("claims-not-an-object", "get_node", lambda c: bearer(_claims_not_an_object(c)), UNAUTH),
    (
        "exp-as-string",
        "get_node",
        lambda c: bearer(c.peer(exp=str(int(time.time()) + 60))),
        UNAUTH,
    ),
    (
        "tampered-payload",
        "get_node",
        lambda c: bearer(forge.tamper(c.peer(), sub="ppos.controlplane.root")),
        UNAUTH,
    ),
    (
        "embedded-jwk-header",
        "get_node",
        lambda c: bearer(
            forge.sign(
                c.key,
                c.kid,
                forge.peer_claims(NODE_REGISTRY, GET_NODE),
                typ=PREFLIGHT_TYP,
                jwk={"kty": "OKP"},
            )
        ),
        UNAUTH,
    ),
    (
        "wrong-token-type",
        "get_node",
        lambda c: bearer(
            forge.sign(c.key, c.kid, forge.peer_claims(NODE_REGISTRY, GET_NODE), typ="JWT")
        ),
        UNAUTH,
    ),
    (
        "replayed-for-other-audience",
        "get_node",
        lambda c: bearer(_replayed_for_other_audience(c)),
        UNAUTH,
    ),
    (
        "peer-token-on-operator-rpc",
        "create_enrollment",
        lambda c: bearer(c.peer(method=CREATE_ENROLLMENT)),
        DENIED,
    ),
    (
        "node-token-on-operator-rpc",
        "create_enrollment",
        lambda c: bearer(c.node.credential),
        DENIED,
    ),
    ("node-token-on-peer-rpc", "get_node", lambda c: bearer(c.node.credential), DENIED),
    ("control-token-on-node-rpc", "register_node", lambda c: bearer(c.token), DENIED),
    (
        "peer-token-on-node-rpc",
        "register_node",
        lambda c: bearer(c.peer(method=f"/{NODE_REGISTRY}/RegisterNode")),
        DENIED,
    ),
    (
        "enrollment-token-on-operator-rpc",
        "create_enrollment",
        lambda c: bearer("ppos_enroll_" + uuid.uuid4().hex),
        DENIED,
    ),
    (
        "node-token-wrong-audience",
        "register_node",
        lambda c: bearer(c.node_token(aud=SYNC)),
        UNAUTH,
    ),
    (
        "node-token-without-generation",
        "register_node",
        lambda c: bearer(c.node_token(gen=None)),
        UNAUTH,
    ),
    (
        "node-token-without-scope",
        "register_node",
        lambda c: bearer(c.node_token(scope=None)),
        UNAUTH,
    ),
    (
        "node-claims-with-peer-type",
        "register_node",
        lambda c: bearer(
            forge.sign(c.key, c.kid, forge.node_claims(c.node.node_id, 1), typ=PREFLIGHT_TYP)
        ),
        UNAUTH,
    ),
    (
        "revoked-node-credential",
        "register_node",
        lambda c: bearer(_revoked_node_credential(c)),
        UNAUTH,
    ),
    ("forged-generation", "register_node", lambda c: bearer(c.node_token(gen=99)), UNAUTH),
]


async def _call(target: str, ctx: Ctx, metadata: Metadata) -> Any:
    stub = pb_grpc.NodeRegistryServiceStub(ctx.plane.channel)
    if target == "create_enrollment":
        return await stub.CreateEnrollment(
            pb.CreateEnrollmentRequest(region="eu-west-1"), metadata=metadata
        )
    if target == "register_node":
        return await stub.RegisterNode(
            pb.RegisterNodeRequest(
                region="eu-west-1",
                container=node_pb2.ContainerVersion(image=IMAGE + "-evil", digest=DIGEST),
                capacity_slots=9,
            ),
            metadata=metadata,
        )
    return await stub.GetNode(pb.GetNodeRequest(node_id=ctx.node.node_id), metadata=metadata)


async def _ctx(plane: RunningPlane) -> Ctx:
    node = await enroll_node(plane.channel, plane.operator)
    active = plane.runtime.keyring.active
    return Ctx(plane, node, active.private_key, active.kid)


@pytest.mark.parametrize(("case", "target", "build", "expected"), CASES, ids=[c[0] for c in CASES])
async def test_hostile_credential_is_refused_without_side_effects(
    plane: RunningPlane,
    case: str,
    target: str,
    build: Callable[[Ctx], Metadata],
    expected: grpc.StatusCode,
) -> None:
    ctx = await _ctx(plane)
    if case in ("revoked-node-credential", "forged-generation"):
        stub = pb_grpc.NodeRegistryServiceStub(plane.channel)
        await stub.RenewNodeCredential(pb.RenewNodeCredentialRequest(), metadata=ctx.node.metadata)
    metadata = build(ctx)
    before = row_counts(plane.database_url)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(target, ctx, metadata)

    error = caught.value
    assert error.code() == expected, error.details()
    assert row_counts(plane.database_url) == before, "a refused call changed the database"
    assert plane.token not in (error.details() or "")
    for _key, value in metadata:
        if len(value) > 40:
            assert value not in (error.details() or ""), "the error echoed the credential"
    rich = await _rich(error)
    info = error_details_pb2.ErrorInfo()
    assert any(d.Unpack(info) for d in rich.details), "ErrorInfo detail missing"
    assert info.reason, "ErrorInfo must carry a machine-readable reason"


async def _rich(error: grpc.aio.AioRpcError) -> Any:
    from google.rpc import status_pb2

    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    raise AssertionError("no rich status details in the trailers")


def test_at_least_25_hostile_cases() -> None:
    assert len(CASES) >= 25
    assert len({c[0] for c in CASES}) == len(CASES)


async def test_valid_credentials_pass_the_same_edge(plane: RunningPlane) -> None:
    """Positive controls for the cases above: the edge is not refusing everything."""
    ctx = await _ctx(plane)
    stub = pb_grpc.NodeRegistryServiceStub(plane.channel)
    created = await stub.CreateEnrollment(
        pb.CreateEnrollmentRequest(region="eu-west-1"), metadata=bearer(ctx.token)
    )
    assert created.enrollment_token.startswith("ppos_enroll_")
    lower = await stub.CreateEnrollment(
        pb.CreateEnrollmentRequest(region="eu-west-1"),
        metadata=(("authorization", f"bearer {ctx.token}"),),  # RFC 7235: scheme is case-blind
    )
    assert lower.enrollment_id != created.enrollment_id
    get = pb.GetNodeRequest(node_id=ctx.node.node_id)
    peer = ctx.plane.runtime.minter.mint_preflight(
        subject="ppos.controlplane.governance",
        audience=NODE_REGISTRY,
        method=GET_NODE,
        request_id="req_ok",
        request_sha256=request_sha256(get.SerializeToString()),
    )
    got = await stub.GetNode(get, metadata=bearer(peer))
    assert got.node.node_id == ctx.node.node_id
    registered = await stub.RegisterNode(
        pb.RegisterNodeRequest(
            region="eu-west-1",
            container=node_pb2.ContainerVersion(image=IMAGE, digest=DIGEST),
            capacity_slots=8,
        ),
        metadata=ctx.node.metadata,
    )
    assert registered.node.spec.capacity_slots == 8


async def test_enrollment_token_is_single_use(plane: RunningPlane) -> None:
    stub = pb_grpc.NodeRegistryServiceStub(plane.channel)
    enrollment = await stub.CreateEnrollment(
        pb.CreateEnrollmentRequest(region="eu-west-1"), metadata=plane.operator
    )
    token = bearer(enrollment.enrollment_token)
    first = await stub.EnrollNode(pb.EnrollNodeRequest(hostname="a"), metadata=token)
    before = row_counts(plane.database_url)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.EnrollNode(pb.EnrollNodeRequest(hostname="b"), metadata=token)
    assert caught.value.code() == UNAUTH
    assert row_counts(plane.database_url) == before
    assert first.node_id


async def test_edge_refusals_are_counted_by_reason(plane: RunningPlane) -> None:
    stub = pb_grpc.NodeRegistryServiceStub(plane.channel)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.GetNode(pb.GetNodeRequest(node_id="x"))
    assert (GET_NODE, "MISSING_CREDENTIAL") in plane.auth_failures


async def test_oversized_header_is_refused_by_the_transport(plane: RunningPlane) -> None:
    """Beyond the server's metadata limit the transport answers before the edge."""
    stub = pb_grpc.NodeRegistryServiceStub(plane.channel)
    before = row_counts(plane.database_url)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateEnrollment(
            pb.CreateEnrollmentRequest(region="eu-west-1"),
            metadata=bearer(plane.token + "A" * 20_000),
        )
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert plane.token not in (caught.value.details() or "")
    assert row_counts(plane.database_url) == before
