"""ES256 (ECDSA P-256 over SHA-256) as JWS wants it, with one byte string per signature."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from ppos.controlplane.security.keys import PrivateKey, PublicKey

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
# The order of P-256's base point. ECDSA signatures (r, s) and (r, n - s) verify
# alike; we sign with the low one and accept only it, so that a captured token
# has exactly one valid byte string (caches and single-use ledgers keyed on the
# token string cannot be sidestepped by re-encoding the signature).
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_P256_HALF_ORDER = _P256_ORDER // 2


def es256_sign(data: bytes, key: PrivateKey) -> bytes:
    """ECDSA P-256 over SHA-256, as JWS wants it: r || s, 32 bytes each, s low."""
    r, s = decode_dss_signature(key.sign(data, _ECDSA_SHA256))
    if s > _P256_HALF_ORDER:
        s = _P256_ORDER - s
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def es256_verify(data: bytes, key: PublicKey, signature: bytes) -> bool:
    if len(signature) != 64:
        return False
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    if not 0 < s <= _P256_HALF_ORDER:
        return False  # the malleated twin of a valid signature
    der = encode_dss_signature(r, s)
    try:
        key.verify(der, data, _ECDSA_SHA256)
    except InvalidSignature:
        return False
    return True
