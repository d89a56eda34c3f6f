"""Signed statements: a compact ES256 JWS of bytes the caller encoded itself
(the sync's chain checkpoints), checked against the published keys."""

from __future__ import annotations

from ppos.controlplane.security.claims import TokenRejected
from ppos.controlplane.security.es256 import es256_verify
from ppos.controlplane.security.jose import COMPACT_ES256, b64decode, peek_header
from ppos.controlplane.security.keys import JWK_ALG, PublicKeySource

_STATEMENT_HEADER = frozenset({"alg", "kid", "typ"})


def verify_statement(token: str, *, typ: str, keys: PublicKeySource) -> bytes:
    """The payload of a compact ES256 JWS of type `typ` signed by a key in `keys`."""
    match = COMPACT_ES256.fullmatch(token)
    header = peek_header(token) if match is not None else None
    if match is None or header is None:
        raise TokenRejected("malformed", "not a compact ES256 JWS")
    if header.get("alg") != JWK_ALG or header.get("typ") != typ or set(header) != _STATEMENT_HEADER:
        raise TokenRejected("wrong_header", f"not an {JWK_ALG} {typ}")
    key = keys.public_key(str(header["kid"]))
    if key is None:
        raise TokenRejected("unknown_key", f"signed by key {header['kid']}, which is not accepted")
    signing_input = f"{match.group(1)}.{match.group(2)}".encode()
    if not es256_verify(signing_input, key, b64decode(match.group(3))):
        raise TokenRejected("bad_signature", "signature does not verify")
    return b64decode(match.group(2))
