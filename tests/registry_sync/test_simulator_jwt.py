"""The simulator checks a PREFLIGHT_JWT on its own, as the real registry would.

Tokens and keys here are made with PyJWT and cryptography directly, not with
the control plane's minter or key ring (except where a test proves the two
agree), so a bug shared by the control plane's minter and verifier cannot
hide behind the simulator.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from ppos.controlplane.security.claims import request_sha256
from ppos.controlplane.security.keys import KeyRing
from ppos.controlplane.security.tokens import TokenMinter
from ppos.preflight.v1 import registry_service_pb2 as pb
from ppos.preflight.v1 import registry_service_pb2_grpc as pb_grpc
from ppos.preflightsim.auth import registry_audience
from ppos.preflightsim.jwks import RefreshingJwks, jwks_from_file
from ppos.preflightsim.preflight_jwt import PreflightJwtVerifier, TokenRefused
from tests.registry_sync.harness import ODD_SAMPLES, call_error, start_simulator

ISSUER = "ppos-control-plane"
AUDIENCE = registry_audience("eu-west-1")
METHOD = "/ppos.preflight.v1.PreflightRegistryService/ListJobChanges"
ONE = pb.ListJobChangesRequest(page_size=1)


class Key:
    """An ES256 key pair and its JWK, made without the control plane's code."""

    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.private = ec.generate_private_key(ec.SECP256R1())
        jwk: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(self.private.public_key()))
        self.jwk = {**jwk, "kid": kid, "alg": "ES256", "use": "sig"}

    def sign(self, claims: dict[str, Any], **headers: Any) -> str:
        header = {"kid": self.kid, "typ": "preflight+jwt", **headers}
        return jwt.encode(claims, self.private, algorithm="ES256", headers=header)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "ppos.controlplane.registrysync",
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 60,
        "jti": uuid.uuid4().hex,
        "mth": METHOD,
        "rid": "req_sim_jwt",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], body: dict[str, Any], signature: bytes = b"") -> str:
    encoded = (b64url(json.dumps(part).encode()) for part in (header, body))
    return ".".join((*encoded, b64url(signature)))


def publish(path: Path, *keys: Key) -> Path:
    path.write_text(json.dumps({"keys": [k.jwk for k in keys]}))
    return path


@pytest.fixture
def key() -> Key:
    return Key("key-a")


@pytest.fixture
def verifier(tmp_path: Path, key: Key) -> PreflightJwtVerifier:
    jwks = publish(tmp_path / "jwks.json", key)
    return PreflightJwtVerifier(RefreshingJwks(jwks_from_file(jwks)), issuer=ISSUER)


def refusal(verifier: PreflightJwtVerifier, token: str, method: str = METHOD) -> str:
    with pytest.raises(TokenRefused) as refused:
        verifier.verify(token, audience=AUDIENCE, method=method)
    return refused.value.reason


def test_a_valid_token_gives_its_claims(verifier: PreflightJwtVerifier, key: Key) -> None:
    token = key.sign(claims(act={"sub": "operator"}))
    checked = verifier.verify(token, audience=AUDIENCE, method=METHOD)
    assert (checked.subject, checked.method, checked.request_id, checked.acting_for) == (
        "ppos.controlplane.registrysync",
        METHOD,
        "req_sim_jwt",
        "operator",
    )


def test_what_the_control_plane_mints_passes(tmp_path: Path) -> None:
    ring = KeyRing.from_directory(tmp_path / "keys")
    ring.write_jwks(tmp_path / "jwks.json")
    token = TokenMinter(ring, issuer=ISSUER).mint_preflight(
        subject="ppos.controlplane.registrysync",
        audience=AUDIENCE,
        method=METHOD,
        request_id="req_minted",
    )
    keys = RefreshingJwks(jwks_from_file(tmp_path / "jwks.json"))
    checked = PreflightJwtVerifier(keys, issuer=ISSUER).verify(
        token, audience=AUDIENCE, method=METHOD
    )
    assert checked.request_id == "req_minted"


def test_forged_tokens_are_refused(verifier: PreflightJwtVerifier, key: Key) -> None:
    impostor = Key(key.kid)  # claims the published kid, signs with its own key
    good = key.sign(claims())
    head, body, signature = good.split(".")
    other_body = b64url(json.dumps(claims(sub="someone-else")).encode())
    assert refusal(verifier, impostor.sign(claims())) == "bad_signature"
    assert refusal(verifier, f"{head}.{other_body}.{signature}") == "bad_signature"
    assert refusal(verifier, f"{head}.{body}.{signature[:-4]}AAAA") == "bad_signature"
    assert refusal(verifier, "not-a-jwt") == "malformed"
    assert refusal(verifier, "a" * 5000) == "oversized"
    assert refusal(verifier, Key("key-nobody-published").sign(claims())) == "unknown_key"


def test_alg_none_and_hmac_are_refused(verifier: PreflightJwtVerifier, key: Key) -> None:
    header = {"kid": key.kid, "typ": "preflight+jwt"}
    assert refusal(verifier, unsigned({**header, "alg": "none"}, claims())) == "wrong_algorithm"
    # The classic confusion: the public key, which anyone has, used as an HMAC secret.
    public_pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for alg, digest in (("HS256", hashlib.sha256), ("HS512", hashlib.sha512)):
        forged = unsigned({**header, "alg": alg}, claims())
        signing_input = forged.rsplit(".", 1)[0]
        mac = hmac.new(public_pem, signing_input.encode(), digest).digest()
        assert refusal(verifier, f"{signing_input}.{b64url(mac)}") == "wrong_algorithm"


def test_time_claims_are_checked(verifier: PreflightJwtVerifier, key: Key) -> None:
    now = int(time.time())
    assert refusal(verifier, key.sign(claims(iat=now - 120, exp=now - 60))) == "expired"
    assert refusal(verifier, key.sign(claims(nbf=now + 60))) == "not_yet_valid"
    assert refusal(verifier, key.sign(claims(iat=now + 60, exp=now + 120))) == "not_yet_valid"
    assert refusal(verifier, key.sign(claims(exp=now + 3600))) == "lifetime_too_long"
    assert refusal(verifier, key.sign(claims(exp=None))) == "missing_claim"
    # Within the leeway of a few seconds of clock skew: accepted.
    verifier.verify(key.sign(claims(exp=now - 2)), audience=AUDIENCE, method=METHOD)


def test_audience_issuer_type_and_method_are_checked(
    verifier: PreflightJwtVerifier, key: Key
) -> None:
    other_region = registry_audience("us-east-1")
    assert refusal(verifier, key.sign(claims(aud=other_region))) == "wrong_audience"
    assert refusal(verifier, key.sign(claims(aud=[AUDIENCE, other_region]))) == "wrong_audience"
    assert refusal(verifier, key.sign(claims(iss="someone-else"))) == "wrong_issuer"
    assert refusal(verifier, key.sign(claims(mth=None))) == "missing_claim"
    assert refusal(verifier, key.sign(claims(), typ="node+jwt")) == "wrong_type"
    info = "/ppos.preflight.v1.PreflightRegistryService/GetRegistryInfo"
    assert refusal(verifier, key.sign(claims()), method=info) == "wrong_method"


def test_an_unknown_kid_reloads_the_jwks_so_rotation_works(tmp_path: Path, key: Key) -> None:
    jwks = publish(tmp_path / "jwks.json", key)
    now = [0.0]
    keys = RefreshingJwks(jwks_from_file(jwks), refresh_interval=5.0, clock=lambda: now[0])
    verifier = PreflightJwtVerifier(keys, issuer=ISSUER)
    rotated = Key("key-b")
    token = rotated.sign(claims())
    now[0] = 10.0
    assert refusal(verifier, token) == "unknown_key"  # reloaded, not published yet
    assert keys.reloads == 1
    publish(jwks, key, rotated)
    assert refusal(verifier, token) == "unknown_key"  # a reload at most every 5 s
    assert keys.reloads == 1
    now[0] = 15.0
    assert not verifier.knows_key_of(token)
    assert verifier.verify(token, audience=AUDIENCE, method=METHOD).subject
    assert keys.reloads == 2
    assert verifier.knows_key_of(token)
    # A reload that fails (file gone) keeps the keys in force.
    jwks.unlink()
    now[0] = 30.0
    assert refusal(verifier, Key("key-c").sign(claims())) == "unknown_key"
    verifier.verify(key.sign(claims()), audience=AUDIENCE, method=METHOD)


async def test_the_simulator_picks_up_a_rotation_over_grpc(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    jwks = tmp_path / "jwks.json"
    KeyRing.from_directory(key_dir).write_jwks(jwks)
    running = await start_simulator(
        "eu-west-1", jwks, records=[ODD_SAMPLES], extra=["--jwks-refresh-interval", "0"]
    )
    try:
        KeyRing.rotate(key_dir)
        rotated = KeyRing.from_directory(key_dir)
        token = TokenMinter(rotated, issuer=ISSUER).mint_preflight(
            subject="ppos.controlplane.registrysync",
            audience=AUDIENCE,
            method=METHOD,
            request_id="req_rotated",
            request_sha256=request_sha256(ONE.SerializeToString()),
        )
        metadata = (("authorization", f"Bearer {token}"),)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.PreflightRegistryServiceStub(channel)
            error = await call_error(stub.ListJobChanges(ONE, metadata=metadata))
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert error.details() == "PREFLIGHT_JWT rejected: signing key not known"
            rotated.write_jwks(jwks)  # the control plane publishes its new key
            reply = await stub.ListJobChanges(ONE, metadata=metadata)
            assert len(reply.records) == 1
    finally:
        await running.stop(0)
