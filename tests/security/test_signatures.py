"""ES256 signatures have one valid byte string: low s when signing, only low s accepted."""

from __future__ import annotations

from ppos.controlplane.security.es256 import es256_sign, es256_verify
from ppos.controlplane.security.keys import new_private_key
from tests.support.forge import P256_ORDER


def test_signatures_are_low_s_and_their_high_s_twins_are_refused() -> None:
    key = new_private_key()
    public = key.public_key()
    for n in range(64):  # a plain ECDSA signer picks the high half about half the time
        data = f"header.claims-{n}".encode()
        signature = es256_sign(data, key)
        r, s = signature[:32], int.from_bytes(signature[32:], "big")
        assert 0 < s <= P256_ORDER // 2
        assert es256_verify(data, public, signature)
        twin = r + (P256_ORDER - s).to_bytes(32, "big")
        assert not es256_verify(data, public, twin)


def test_zero_s_is_refused() -> None:
    key = new_private_key()
    signature = es256_sign(b"x", key)
    assert not es256_verify(b"x", key.public_key(), signature[:32] + bytes(32))
