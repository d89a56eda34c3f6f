"""Page-token MAC keys, derived from the deployment's signing keys.

Every replica of every service of one deployment holds the same signing key
(PPOS_SIGNING_KEY_FILE shared in compose and Kubernetes; the key directory
under the data dir in one-process mode), so a key derived from it is the
same everywhere with nothing to store or agree on: a token issued by one
replica is read by any other. HKDF-SHA256 over the private scalar, with an
`info` of its own, gives a key that says nothing about the signing key and
is used for nothing else.

New tokens are sealed with the key derived from the active signing key;
tokens sealed under a retired key still in its overlap window (a key
directory keeps those) are still read. Once the ring drops a key, its tokens
are stale: INVALID_ARGUMENT, list again from the start.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ppos.controlplane.security.keys import KeyRing, PrivateKey

_INFO = b"ppos-controlplane page-token mac v1"
_SALT = b"ppos-controlplane page tokens"


def derive_mac_key(private_key: PrivateKey) -> bytes:
    """The page-token key of one signing key."""
    scalar = private_key.private_numbers().private_value.to_bytes(32, "big")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=_INFO).derive(scalar)


def key_id(kid: str) -> bytes:
    """8 bytes naming a signing key (its JWK thumbprint is public) inside a token."""
    return hashlib.sha256(kid.encode()).digest()[:8]


class RingPageKeys:
    """`MacKeys` over a KeyRing, following its rotations as the ring reloads."""

    def __init__(self, ring: KeyRing) -> None:
        self._ring = ring
        self._derived: dict[str, tuple[bytes, bytes]] = {}  # kid -> (key id, key)

    def _of(self, kid: str, private_key: PrivateKey) -> tuple[bytes, bytes]:
        known = self._derived.get(kid)
        if known is None:
            known = (key_id(kid), derive_mac_key(private_key))
            self._derived[kid] = known
        return known

    def signing_key(self) -> tuple[bytes, bytes]:
        active = self._ring.active
        return self._of(active.kid, active.private_key)

    def key(self, wanted: bytes) -> bytes | None:
        held = self._ring.private_keys()
        for kid in [k for k in self._derived if k not in held]:
            del self._derived[kid]  # rotated out of the ring: its tokens are stale now
        for kid, private_key in held.items():
            ident, key = self._of(kid, private_key)
            if hmac.compare_digest(ident, wanted):
                return key
        return None
