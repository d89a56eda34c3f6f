"""Forging tokens the way an attacker would, for hostile-case tests."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import jwt

from ppos.controlplane.security.keys import PrivateKey


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def peer_claims(audience: str, method: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "ppos-control-plane",
        "sub": "ppos.controlplane.governance",
        "aud": audience,
        "iat": now,
        "exp": now + 60,
        "jti": uuid.uuid4().hex,
        "mth": method,
        "rid": "req_forged",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def node_claims(node_id: str, generation: int, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "ppos-control-plane",
        "sub": f"node:{node_id}",
        "aud": "ppos.controlplane.noderegistry.v1.NodeRegistryService",
        "iat": now,
        "exp": now + 3600,
        "jti": uuid.uuid4().hex,
        "gen": generation,
        "scope": "node",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def with_s(token: str, *, high: bool) -> str:
    """The same token with its ECDSA signature's s in the low or the high half.

    (r, s) and (r, n - s) both verify under plain ECDSA; the plane signs and
    accepts only the low one, so a forger's signature is normalized first."""
    header, payload, signature = token.split(".")
    raw = _b64url_decode(signature)
    s = int.from_bytes(raw[32:], "big")
    if (s > P256_ORDER // 2) != high:
        s = P256_ORDER - s
    return f"{header}.{payload}.{b64url(raw[:32] + s.to_bytes(32, 'big'))}"


def sign(key: PrivateKey, kid: str, claims: dict[str, Any], *, typ: str, **headers: Any) -> str:
    token = jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid, "typ": typ, **headers})
    return with_s(token, high=False)


def sign_raw(key: PrivateKey, kid: str, payload: bytes, *, typ: str) -> str:
    """A correctly signed token whose payload is arbitrary bytes (not claims)."""
    from jwt.algorithms import ECAlgorithm

    header = b64url(json.dumps({"alg": "ES256", "kid": kid, "typ": typ}).encode())
    signing_input = f"{header}.{b64url(payload)}"
    signature = ECAlgorithm(ECAlgorithm.SHA256).sign(signing_input.encode(), key)
    return with_s(f"{signing_input}.{b64url(signature)}", high=False)


def unsigned(claims: dict[str, Any], *, kid: str, typ: str) -> str:
    """alg=none: header and claims, empty signature."""
    header = {"alg": "none", "typ": typ, "kid": kid}
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}."


def hs256_with_public_key(claims: dict[str, Any], public_raw: bytes, *, kid: str, typ: str) -> str:
    """The classic confusion: HMAC keyed with the verifier's public key."""
    import hashlib
    import hmac

    header = {"alg": "HS256", "typ": typ, "kid": kid}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    mac = hmac.new(public_raw, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def tamper(token: str, **changes: Any) -> str:
    """Change claims but keep the original signature."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    return f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"
