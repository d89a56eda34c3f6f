"""What a verified PREFLIGHT_JWT or node credential says, and why one is refused."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import NamedTuple

PREFLIGHT_TYP = "preflight+jwt"
NODE_TYP = "node+jwt"


class TokenRejected(Exception):
    """A token failed verification; `reason` is a short machine-readable cause."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class PreflightClaims(NamedTuple):
    issuer: str
    subject: str
    audience: str
    method: str
    request_id: str
    jti: str
    issued_at: int
    expires_at: int
    acting_for: str
    # `rqh`: SHA-256 of the serialized request message the token was minted for
    # (base64url, unpadded); empty for a call whose request is a stream.
    request_sha256: str = ""


def request_sha256(data: bytes) -> str:
    """The `rqh` claim of a request: its serialized bytes' SHA-256, base64url."""
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


REQUEST_SHA256 = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")


@dataclass(frozen=True)
class NodeClaims:
    node_id: str
    generation: int
    expires_at: int
