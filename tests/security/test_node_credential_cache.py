"""The verifier's cache of node credentials: it saves the signature check of a
credential a node presents again, and never accepts what a full check would not."""

from __future__ import annotations

import pytest

from ppos.controlplane.security.claims import TokenRejected
from ppos.controlplane.security.tokens import TokenMinter, TokenVerifier
from tests.support.keys import HandClock, HandRing

AUDIENCE = "ppos.controlplane.noderegistry.v1.NodeRegistryService"
ISSUER = "ppos-control-plane"


def _mint(ring: HandRing, clock: HandClock, node: str = "node_a", ttl: float = 3600) -> str:
    minter = TokenMinter(ring, issuer=ISSUER, clock=clock)  # type: ignore[arg-type]
    token, _ = minter.mint_node_credential(
        node_id=node, generation=3, audience=AUDIENCE, ttl_seconds=ttl
    )
    return token


def _verifier(ring: HandRing, clock: HandClock, size: int = 65_536) -> TokenVerifier:
    return TokenVerifier(ring, issuer=ISSUER, clock=clock, node_cache_size=size)


def test_a_credential_presented_again_gives_the_same_claims(
    ring: HandRing, clock: HandClock
) -> None:
    verifier = _verifier(ring, clock)
    token = _mint(ring, clock)
    first = verifier.verify_node_credential(token, audience=AUDIENCE)
    again = verifier.verify_node_credential(token, audience=AUDIENCE)
    assert again == first
    assert (first.node_id, first.generation) == ("node_a", 3)


def test_a_cached_credential_still_expires(ring: HandRing, clock: HandClock) -> None:
    verifier = _verifier(ring, clock)
    token = _mint(ring, clock, ttl=60)
    verifier.verify_node_credential(token, audience=AUDIENCE)
    clock.now += 3600
    with pytest.raises(TokenRejected) as refused:
        verifier.verify_node_credential(token, audience=AUDIENCE)
    assert refused.value.reason == "expired"


def test_a_cached_credential_dies_with_its_signing_key(ring: HandRing, clock: HandClock) -> None:
    verifier = _verifier(ring, clock)
    token = _mint(ring, clock)
    verifier.verify_node_credential(token, audience=AUDIENCE)
    del ring.accepted["k1"]  # the overlap after a rotation has ended
    with pytest.raises(TokenRejected) as refused:
        verifier.verify_node_credential(token, audience=AUDIENCE)
    assert refused.value.reason == "unknown_key"


def test_a_cached_credential_is_not_valid_for_another_audience(
    ring: HandRing, clock: HandClock
) -> None:
    verifier = _verifier(ring, clock)
    token = _mint(ring, clock)
    verifier.verify_node_credential(token, audience=AUDIENCE)
    with pytest.raises(TokenRejected) as refused:
        verifier.verify_node_credential(token, audience="ppos.controlplane.other.v1.Other")
    assert refused.value.reason == "wrong_audience"


def test_a_tampered_copy_of_a_cached_credential_is_checked_in_full(
    ring: HandRing, clock: HandClock
) -> None:
    verifier = _verifier(ring, clock)
    token = _mint(ring, clock)
    verifier.verify_node_credential(token, audience=AUDIENCE)
    header, claims, signature = token.split(".")
    flipped = claims[:-2] + ("A" if claims[-2] != "A" else "B") + claims[-1]
    with pytest.raises(TokenRejected):
        verifier.verify_node_credential(f"{header}.{flipped}.{signature}", audience=AUDIENCE)


def test_the_cache_is_bounded_and_forgets_the_least_recently_used(
    ring: HandRing, clock: HandClock
) -> None:
    verifier = _verifier(ring, clock, size=2)
    tokens = [_mint(ring, clock, node=f"node_{i}") for i in range(3)]
    for token in tokens:
        verifier.verify_node_credential(token, audience=AUDIENCE)
    cache = verifier._node_cache  # the bound is what is under test
    assert list(cache) == tokens[1:]
    verifier.verify_node_credential(tokens[1], audience=AUDIENCE)  # used: now the newest
    verifier.verify_node_credential(tokens[0], audience=AUDIENCE)  # verified again
    assert list(cache) == [tokens[1], tokens[0]]
