"""PREFLIGHT_JWT and node credentials: minting and strict verification.

A PREFLIGHT_JWT is minted per outbound call: ES256 (ECDSA P-256) with a `kid`,
claims `iss`, `sub` (the calling service), one `aud` (the callee), `iat`,
short `exp`, unique `jti`, `mth` (the called method), `rid` (the request id)
and, when acting for someone, `act` (RFC 8693 actor). Receivers pin the
algorithm and the token type and check signature, audience, issuer, expiry,
issue time, lifetime and the method binding.
"""

from __future__ import annotations

import binascii
import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ppos.controlplane.security.claims import (
    NODE_TYP,
    PREFLIGHT_TYP,
    REQUEST_SHA256,
    NodeClaims,
    PreflightClaims,
    TokenRejected,
)
from ppos.controlplane.security.es256 import es256_sign, es256_verify
from ppos.controlplane.security.jose import (
    COMPACT_ES256,
    JSON_ENCODER,
    MAX_TOKEN_LENGTH,
    b64decode,
    b64encode,
    compact,
    peek_header,
)
from ppos.controlplane.security.keys import JWK_ALG, KeyRing, PublicKey, PublicKeySource
from ppos.controlplane.security.self_minted import SelfMinted

_FORBIDDEN_HEADERS = frozenset({"crit", "jku", "jwk", "x5u", "x5c", "x5t", "zip"})
_PREFLIGHT_REQUIRED = ["iss", "sub", "aud", "iat", "exp", "jti", "mth"]
_NODE_REQUIRED = ["iss", "sub", "aud", "iat", "exp", "jti", "gen"]
# Verified-good JOSE headers by their encoded form: there is one per signing key
# and token type, so this stays small; it is capped anyway.
_MAX_KNOWN_HEADERS = 64


class TokenMinter:
    """Signs tokens with the key ring's active key. Holds no credential of callers."""

    def __init__(
        self,
        keyring: KeyRing,
        *,
        issuer: str,
        ttl_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keyring = keyring
        self._issuer = issuer
        self._ttl = int(ttl_seconds)
        self._clock = clock
        self._headers: dict[tuple[str, str], str] = {}
        self._fixed_claims: dict[tuple[str, str, str], str] = {}

    def mint_preflight(
        self,
        *,
        subject: str,
        audience: str,
        method: str,
        request_id: str,
        acting_for: str = "",
        request_sha256: str = "",
        remember_in: SelfMinted | None = None,
    ) -> str:
        """A PREFLIGHT_JWT for one call, bound to its request when `request_sha256`
        is given; `remember_in` keeps it (with its claims) when the call comes back
        to this process (see SelfMinted)."""
        # The claims that are the same for every call of a method on a channel are
        # encoded once; per call only the times, the jti, the request id and the
        # actor are (the strings through the JSON encoder, so always escaped).
        fixed = self._fixed_claims.get((subject, audience, method))
        if fixed is None:
            fixed = JSON_ENCODER.encode(
                {"iss": self._issuer, "sub": subject, "aud": audience, "mth": method}
            )[:-1]
            self._fixed_claims[(subject, audience, method)] = fixed
        now = int(self._clock())
        jti = os.urandom(16).hex()
        act = f',"act":{{"sub":{JSON_ENCODER.encode(acting_for)}}}' if acting_for else ""
        rqh = f',"rqh":{JSON_ENCODER.encode(request_sha256)}' if request_sha256 else ""
        claims = (
            f'{fixed},"iat":{now},"exp":{now + self._ttl},"jti":"{jti}",'
            f'"rid":{JSON_ENCODER.encode(request_id)}{act}{rqh}}}'
        )
        token, kid = self._sign_encoded(claims.encode(), PREFLIGHT_TYP)
        if remember_in is not None:
            remember_in.remember(
                token,
                PreflightClaims(
                    self._issuer,
                    subject,
                    audience,
                    method,
                    request_id,
                    jti,
                    now,
                    now + self._ttl,
                    acting_for,
                    request_sha256,
                ),
                kid,
            )
        return token

    def mint_node_credential(
        self, *, node_id: str, generation: int, audience: str, ttl_seconds: float
    ) -> tuple[str, int]:
        now = int(self._clock())
        expires = now + int(ttl_seconds)
        claims = {
            "iss": self._issuer,
            "sub": f"node:{node_id}",
            "aud": audience,
            "iat": now,
            "exp": expires,
            "jti": os.urandom(16).hex(),
            "gen": generation,
            "scope": "node",
        }
        return self._sign(claims, NODE_TYP), expires

    def sign_statement(self, payload: bytes, typ: str) -> str:
        """A compact JWS of `payload` (the caller's own canonical bytes) with the active key."""
        return self._sign_encoded(payload, typ)[0]

    def _sign(self, claims: dict[str, Any], typ: str) -> str:
        return self._sign_encoded(compact(claims), typ)[0]

    def _sign_encoded(self, claims: bytes, typ: str) -> tuple[str, str]:
        """Compact JWS, and the kid it is signed with: the encoded header is the same
        for every token of a key and type, so it is built once."""
        key = self._keyring.active
        header = self._headers.get((key.kid, typ))
        if header is None:
            header = b64encode(compact({"alg": JWK_ALG, "kid": key.kid, "typ": typ}))
            self._headers[(key.kid, typ)] = header
        signing_input = f"{header}.{b64encode(claims)}"
        signature = es256_sign(signing_input.encode(), key.private_key)
        return f"{signing_input}.{b64encode(signature)}", key.kid


class TokenVerifier:
    """Verifies tokens against public keys only; it cannot mint."""

    def __init__(
        self,
        keys: PublicKeySource,
        *,
        issuer: str,
        leeway_seconds: float = 5.0,
        max_preflight_lifetime: float = 300.0,
        max_node_lifetime: float = 30 * 86400.0,
        node_cache_size: int = 65_536,
        clock: Callable[[], float] = time.time,
        self_minted: SelfMinted | None = None,
    ) -> None:
        self._keys = keys
        self._self_minted = self_minted
        self._issuer = issuer
        self._leeway = leeway_seconds
        self._max_preflight = max_preflight_lifetime
        self._max_node = max_node_lifetime
        self._clock = clock
        self._known_headers: dict[str, tuple[str, str]] = {}  # encoded -> (typ, kid)
        # Verified node credentials: token -> (claims, kid, audience), least recently
        # used first.
        self._node_cache: OrderedDict[str, tuple[NodeClaims, str, str]] = OrderedDict()
        self._node_cache_size = node_cache_size

    def verify_self_minted(
        self, token: str, *, audience: str, method: str
    ) -> PreflightClaims | None:
        """The checked claims of a PREFLIGHT_JWT this process minted for a call to
        itself (see SelfMinted); None when `token` is not one of those."""
        known = self._self_minted.take(token) if self._self_minted is not None else None
        if known is None:
            return None
        return self._check_self_minted(*known, audience=audience, method=method)

    def verify_preflight(self, token: str, *, audience: str, method: str) -> PreflightClaims:
        """A PREFLIGHT_JWT's checked claims: one this process minted for itself, or
        any other, parsed and its signature checked."""
        known = self.verify_self_minted(token, audience=audience, method=method)
        if known is not None:
            return known
        return self.verify_signed_preflight(token, audience=audience, method=method)

    def verify_signed_preflight(self, token: str, *, audience: str, method: str) -> PreflightClaims:
        """A PREFLIGHT_JWT parsed and checked in full, its signature included."""
        claims, _ = self._decode(token, PREFLIGHT_TYP, audience, _PREFLIGHT_REQUIRED)
        self._check_lifetime(claims, self._max_preflight)
        if claims["mth"] != method:
            raise TokenRejected("wrong_method", "token is bound to another method")
        act = claims.get("act")
        acting_for = act.get("sub", "") if isinstance(act, dict) else ""
        rqh = claims.get("rqh", "")
        if not isinstance(rqh, str) or (rqh and not REQUEST_SHA256.fullmatch(rqh)):
            raise TokenRejected("malformed", "rqh is not a base64url SHA-256")
        return PreflightClaims(
            issuer=claims["iss"],
            subject=str(claims["sub"]),
            audience=claims["aud"],
            method=claims["mth"],
            request_id=str(claims.get("rid", "")),
            jti=str(claims["jti"]),
            issued_at=int(claims["iat"]),
            expires_at=int(claims["exp"]),
            acting_for=str(acting_for),
            request_sha256=rqh,
        )

    def verify_node_credential(self, token: str, *, audience: str) -> NodeClaims:
        """A node credential's claims, from the cache of verified credentials when it
        holds this exact token.

        A node presents the same long-lived credential on every heartbeat, so a
        verified one is remembered (like the Kubernetes API server's token
        cache): byte for byte the same token, the same audience, its signing key
        still accepted and the token not expired; anything else is verified in
        full. Revocation is unaffected: it is the credential generation, which
        the registry compares with the node's row on every call.
        """
        cached = self._node_cache.get(token)
        if cached is not None:
            node, kid, cached_audience = cached
            if (
                cached_audience == audience
                and node.expires_at > self._clock() - self._leeway
                and self._keys.public_key(kid) is not None
            ):
                self._node_cache.move_to_end(token)
                return node
            del self._node_cache[token]
        claims, kid = self._decode(token, NODE_TYP, audience, _NODE_REQUIRED)
        self._check_lifetime(claims, self._max_node)
        subject = str(claims["sub"])
        if not subject.startswith("node:") or len(subject) <= len("node:"):
            raise TokenRejected("bad_subject", "node credential names no node")
        if claims.get("scope") != "node" or not isinstance(claims["gen"], int):
            raise TokenRejected("bad_scope", "not a node-scoped credential")
        node = NodeClaims(subject[len("node:") :], claims["gen"], int(claims["exp"]))
        self._node_cache[token] = (node, kid, audience)
        if len(self._node_cache) > self._node_cache_size:
            self._node_cache.popitem(last=False)
        return node

    def peek_type(self, token: str) -> str | None:
        """The `typ` header of a well-formed JWT, or None. Not a verification."""
        known = self._known_headers.get(token[: token.find(".")])
        if known is not None:
            return known[0]
        header = peek_header(token)
        typ = header.get("typ") if header else None
        return typ if isinstance(typ, str) else None

    def _header(self, segment: str, typ: str) -> tuple[PublicKey, str]:
        """The key named by a JOSE header that passes every check, or TokenRejected.

        Headers that pass are remembered by their encoded form (with the key they
        name), so the tokens of one signing key parse their header once; a header
        is only remembered once it has passed, and a key that leaves the accepted
        set takes its headers with it (they are looked up again).
        """
        known = self._known_headers.get(segment)
        if known is not None and known[0] == typ:
            key = self._keys.public_key(known[1])
            if key is not None:
                return key, known[1]
        try:
            header = json.loads(b64decode(segment))
        except (ValueError, binascii.Error):
            raise TokenRejected("malformed", "not a compact JWS") from None
        if not isinstance(header, dict):
            raise TokenRejected("malformed", "header and claims must be JSON objects")
        if header.get("alg") != JWK_ALG:
            raise TokenRejected("wrong_algorithm", "algorithm not accepted")
        if header.get("typ") != typ:
            raise TokenRejected("wrong_type", "token type not accepted here")
        if _FORBIDDEN_HEADERS & header.keys():
            raise TokenRejected("forbidden_header", "token header not accepted")
        kid = header.get("kid")
        key = self._keys.public_key(kid) if isinstance(kid, str) else None
        if key is None or not isinstance(kid, str):
            raise TokenRejected("unknown_key", "signing key not known")
        if len(self._known_headers) >= _MAX_KNOWN_HEADERS:
            self._known_headers.clear()
        self._known_headers[segment] = (typ, kid)
        return key, kid

    def _decode(
        self, token: str, typ: str, audience: str, required: list[str]
    ) -> tuple[dict[str, Any], str]:
        """Strict compact-JWS verification for our one algorithm.

        The token must be three canonical base64url segments with a 64-byte
        signature; the header is checked before the signature (pinned
        algorithm and type, no key-bearing headers, a known kid); then the
        ES256 signature; then the registered claims. PyJWT's generic decode
        does the same with a per-character Python check of the encoding that
        cost more than the signature itself on this machine.
        """
        if len(token) > MAX_TOKEN_LENGTH:
            raise TokenRejected("oversized", "token too large")
        match = COMPACT_ES256.fullmatch(token)
        if match is None:
            raise TokenRejected("malformed", "not a compact JWS")
        header_segment, claims_segment, signature_segment = match.groups()
        key, kid = self._header(header_segment, typ)
        try:
            claims = json.loads(b64decode(claims_segment))
        except (ValueError, binascii.Error):
            raise TokenRejected("malformed", "not a compact JWS") from None
        if not isinstance(claims, dict):
            raise TokenRejected("malformed", "header and claims must be JSON objects")
        # The pattern admits only canonical base64url of 64 bytes: this decodes.
        signature = b64decode(signature_segment)
        if not es256_verify(token[: match.end(2)].encode(), key, signature):
            raise TokenRejected("bad_signature", "signature does not verify")
        for claim in required:
            if claim not in claims:
                raise TokenRejected("missing_claim", f"claim {claim!r} missing")
        if claims["iss"] != self._issuer:
            raise TokenRejected("wrong_issuer", "token from another issuer")
        if not isinstance(claims["aud"], str) or claims["aud"] != audience:
            raise TokenRejected("wrong_audience", "token meant for another audience")
        exp = claims["exp"]
        if not isinstance(exp, int) or isinstance(exp, bool):
            raise TokenRejected("malformed", "exp must be an integer")
        now = self._clock()
        if exp <= now - self._leeway:
            raise TokenRejected("expired", "token expired")
        nbf = claims.get("nbf")
        if isinstance(nbf, (int, float)) and nbf > now + self._leeway:
            raise TokenRejected("not_yet_valid", "token not valid yet")
        return claims, kid

    def _check_self_minted(
        self, claims: PreflightClaims, kid: str, *, audience: str, method: str
    ) -> PreflightClaims:
        """The checks of `verify_preflight`, in its order, on a token this process
        signed (see SelfMinted): its bytes need no parse and its signature no
        check, but its key must still be accepted and its claims must fit."""
        if self._keys.public_key(kid) is None:
            raise TokenRejected("unknown_key", "signing key not known")
        if claims.issuer != self._issuer:
            raise TokenRejected("wrong_issuer", "token from another issuer")
        if claims.audience != audience:
            raise TokenRejected("wrong_audience", "token meant for another audience")
        now = self._clock()
        if claims.expires_at <= now - self._leeway:
            raise TokenRejected("expired", "token expired")
        if claims.issued_at > now + self._leeway:
            raise TokenRejected("not_yet_valid", "token issued in the future")
        if claims.expires_at - claims.issued_at > self._max_preflight:
            raise TokenRejected("lifetime_too_long", "token lifetime exceeds the maximum")
        if claims.method != method:
            raise TokenRejected("wrong_method", "token is bound to another method")
        return claims

    def _check_lifetime(self, claims: dict[str, Any], max_lifetime: float) -> None:
        iat, exp = claims["iat"], claims["exp"]
        if not isinstance(iat, int) or not isinstance(exp, int):
            raise TokenRejected("malformed", "iat and exp must be integers")
        if iat > self._clock() + self._leeway:
            raise TokenRejected("not_yet_valid", "token issued in the future")
        if exp - iat > max_lifetime:
            raise TokenRejected("lifetime_too_long", "token lifetime exceeds the maximum")
