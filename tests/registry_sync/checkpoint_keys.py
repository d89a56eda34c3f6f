"""A signing key for checkpoint tests, and the signer/verifier keys made of it."""

from __future__ import annotations

import functools

from ppos.controlplane.security.keys import KeyRing, SigningKey, new_private_key, thumbprint
from ppos.controlplane.security.tokens import TokenMinter
from ppos.controlplane.services.registry_sync.checkpoints import CHECKPOINT_TYP, Signer


def make_keys() -> tuple[Signer, KeyRing]:
    private = new_private_key()
    ring = KeyRing(SigningKey(thumbprint(private.public_key()), private, 0.0), {})
    minter = TokenMinter(ring, issuer="ppos-test")
    return functools.partial(minter.sign_statement, typ=CHECKPOINT_TYP), ring


SIGN, KEYS = make_keys()
