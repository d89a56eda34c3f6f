"""A PREFLIGHT_JWT checked as the real registry and gateway would: with PyJWT.

Deliberately not the control plane's verifier: a bug shared by its minter
and its verifier would pass unseen if the simulator verified with the same
code. This one knows only the contract (README, "Security model"): a compact JWS,
`alg` ES256 and nothing else (no `none`, no HMAC that a public key could be
made the secret of), `typ` preflight+jwt, a `kid` of the published JWKS;
claims `iss` (the control plane), `sub`, one `aud` equal to the callee's,
`iat`, a short `exp`, `jti`, `mth` (the method called); `nbf` honoured when
present; a clock leeway of a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt

from ppos.preflightsim.jwks import ALGORITHM, RefreshingJwks

TOKEN_TYPE = "preflight+jwt"  # noqa: S105 - a JOSE type name, not a secret
MAX_TOKEN_LENGTH = 4096
REQUIRED_CLAIMS = ["iss", "sub", "aud", "iat", "exp", "jti", "mth"]


class TokenRefused(Exception):
    """A token that does not pass; `reason` is short and machine-readable."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class PreflightClaims:
    subject: str
    audience: str
    method: str
    request_id: str
    jti: str
    issued_at: int
    expires_at: int
    acting_for: str
    # `rqh`: SHA-256 of the serialized request the token was minted for (base64url).
    request_sha256: str = ""


# PyJWT's exceptions, most specific first, to the reasons this verifier gives.
_REASONS: tuple[tuple[type[Exception], str, str], ...] = (
    (jwt.ExpiredSignatureError, "expired", "token expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid", "token not valid yet"),
    (jwt.InvalidAudienceError, "wrong_audience", "token meant for another audience"),
    (jwt.InvalidIssuerError, "wrong_issuer", "token from another issuer"),
    (jwt.MissingRequiredClaimError, "missing_claim", "a required claim is missing"),
    (jwt.InvalidSignatureError, "bad_signature", "signature does not verify"),
    (jwt.InvalidAlgorithmError, "wrong_algorithm", "algorithm not accepted"),
    (jwt.InvalidTokenError, "malformed", "not a valid JWT"),
)


class PreflightJwtVerifier:
    """Verifies PREFLIGHT_JWTs against the trusted JWKS; holds no private key."""

    def __init__(
        self,
        keys: RefreshingJwks,
        *,
        issuer: str,
        leeway_seconds: float = 5.0,
        max_lifetime_seconds: float = 300.0,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._leeway = leeway_seconds
        self._max_lifetime = max_lifetime_seconds

    def knows_key_of(self, token: str) -> bool:
        """Whether `verify` can run without loading keys (no I/O): the token's kid
        is known, or the token is refused before any key is looked up."""
        try:
            kid = self._header(token)
        except TokenRefused:
            return True
        return self._keys.key(kid) is not None

    def verify(self, token: str, *, audience: str, method: str) -> PreflightClaims:
        """The checked claims, or TokenRefused. Loads the JWKS again (blocking)
        when the token names a kid not loaded yet: a rotation."""
        kid = self._header(token)
        key = self._keys.key_or_reload(kid)
        if key is None:
            raise TokenRefused("unknown_key", "signing key not known")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": REQUIRED_CLAIMS, "strict_aud": True},
            )
        except jwt.InvalidTokenError as exc:
            raise _refusal(exc) from None
        return self._checked(claims, audience, method)

    def _header(self, token: str) -> str:
        """The kid of a header that names our one algorithm and type."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise TokenRefused("oversized", "token too large")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise TokenRefused("malformed", "not a compact JWS") from None
        if header.get("alg") != ALGORITHM:
            raise TokenRefused("wrong_algorithm", "algorithm not accepted")
        if header.get("typ") != TOKEN_TYPE:
            raise TokenRefused("wrong_type", "token type not accepted here")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRefused("unknown_key", "token names no signing key")
        return kid

    def _checked(self, claims: dict[str, Any], audience: str, method: str) -> PreflightClaims:
        """What PyJWT leaves to the application: types, lifetime, the method binding."""
        iat, exp = claims["iat"], claims["exp"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (iat, exp)):
            raise TokenRefused("malformed", "iat and exp must be integers")
        if exp - iat > self._max_lifetime:
            raise TokenRefused("lifetime_too_long", "token lifetime exceeds the maximum")
        if claims["mth"] != method:
            raise TokenRefused("wrong_method", "token is bound to another method")
        act = claims.get("act")
        acting_for = act.get("sub", "") if isinstance(act, dict) else ""
        rqh = claims.get("rqh", "")
        if not isinstance(rqh, str):
            raise TokenRefused("malformed", "rqh must be a string")
        return PreflightClaims(
            subject=str(claims["sub"]),
            audience=audience,
            method=method,
            request_id=str(claims.get("rid", "")),
            jti=str(claims["jti"]),
            issued_at=iat,
            expires_at=exp,
            acting_for=str(acting_for),
            request_sha256=rqh,
        )


def _refusal(exc: jwt.InvalidTokenError) -> TokenRefused:
    for kind, reason, detail in _REASONS:
        if isinstance(exc, kind):
            return TokenRefused(reason, detail)
    return TokenRefused("malformed", "not a valid JWT")
