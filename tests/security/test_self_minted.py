"""Tokens this process minted for a call to itself: their signature check is
saved, every other check still runs, and nothing a full check would refuse is
accepted."""

from __future__ import annotations

import threading

import pytest

from ppos.controlplane.security import tokens
from ppos.controlplane.security.claims import PreflightClaims, TokenRejected
from ppos.controlplane.security.keys import PublicKey
from ppos.controlplane.security.outbound import PreflightJwtMinting
from ppos.controlplane.security.self_minted import SelfMinted
from ppos.controlplane.security.tokens import TokenMinter, TokenVerifier
from tests.support.keys import HandClock, HandRing

AUDIENCE = "ppos.controlplane.noderegistry.v1.NodeRegistryService"
METHOD = f"/{AUDIENCE}/GetNode"
ISSUER = "ppos-control-plane"


class _SignatureChecks:
    """Counts calls of the real es256_verify (it still does the checking)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = tokens.es256_verify

        def counted(data: bytes, key: PublicKey, signature: bytes) -> bool:
            self.count += 1
            return real(data, key, signature)

        monkeypatch.setattr(tokens, "es256_verify", counted)


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> _SignatureChecks:
    return _SignatureChecks(monkeypatch)


def _minting(ring: HandRing, clock: HandClock, registry: SelfMinted | None) -> PreflightJwtMinting:
    minter = TokenMinter(ring, issuer=ISSUER, clock=clock)  # type: ignore[arg-type]
    return PreflightJwtMinting(
        minter, audience=AUDIENCE, subject="ppos.controlplane.governance", loopback=registry
    )


def _token(minting: PreflightJwtMinting, method: str = METHOD) -> str:
    authorization = dict(minting.metadata(method, None))["authorization"]
    return str(authorization).removeprefix("Bearer ")


def _verifier(ring: HandRing, clock: HandClock, registry: SelfMinted | None) -> TokenVerifier:
    return TokenVerifier(ring, issuer=ISSUER, clock=clock, self_minted=registry)


def test_a_token_minted_for_a_call_to_this_process_skips_only_the_signature_check(
    ring: HandRing, clock: HandClock, checks: _SignatureChecks
) -> None:
    registry = SelfMinted()
    token = _token(_minting(ring, clock, registry))
    assert registry.pending == 1

    claims = _verifier(ring, clock, registry).verify_preflight(
        token, audience=AUDIENCE, method=METHOD
    )

    assert (claims.audience, claims.method, claims.subject) == (
        AUDIENCE,
        METHOD,
        "ppos.controlplane.governance",
    )
    assert checks.count == 0
    assert registry.recognised == 1
    assert registry.pending == 0, "a token is recognised once: it was minted for one call"


def test_the_remembered_claims_are_the_claims_the_token_carries(
    ring: HandRing, clock: HandClock
) -> None:
    registry = SelfMinted()
    token = _token(_minting(ring, clock, registry))
    parsed = _verifier(ring, clock, None).verify_preflight(token, audience=AUDIENCE, method=METHOD)

    remembered = _verifier(ring, clock, registry).verify_preflight(
        token, audience=AUDIENCE, method=METHOD
    )

    assert registry.recognised == 1
    assert remembered == parsed
    assert parsed.acting_for == ""
    assert len(parsed.jti) == 32
    assert parsed.expires_at - parsed.issued_at == 60


def test_a_self_minted_token_of_another_issuer_is_refused(ring: HandRing, clock: HandClock) -> None:
    registry = SelfMinted()
    minter = TokenMinter(ring, issuer="someone-else", clock=clock)  # type: ignore[arg-type]
    token = _token(PreflightJwtMinting(minter, audience=AUDIENCE, subject="s", loopback=registry))

    with pytest.raises(TokenRejected) as caught:
        _verifier(ring, clock, registry).verify_preflight(token, audience=AUDIENCE, method=METHOD)

    assert caught.value.reason == "wrong_issuer"


def test_a_replayed_self_minted_token_is_verified_in_full(
    ring: HandRing, clock: HandClock, checks: _SignatureChecks
) -> None:
    registry = SelfMinted()
    token = _token(_minting(ring, clock, registry))
    verifier = _verifier(ring, clock, registry)
    verifier.verify_preflight(token, audience=AUDIENCE, method=METHOD)

    verifier.verify_preflight(token, audience=AUDIENCE, method=METHOD)

    assert checks.count == 1
    assert registry.recognised == 1


@pytest.mark.parametrize(
    ("audience", "method", "advance", "reason"),
    [
        ("ppos.controlplane.governance.v1.GovernanceService", METHOD, 0.0, "wrong_audience"),
        (AUDIENCE, f"/{AUDIENCE}/Heartbeat", 0.0, "wrong_method"),
        (AUDIENCE, METHOD, 3600.0, "expired"),
    ],
)
def test_every_other_check_still_runs_on_a_self_minted_token(
    ring: HandRing,
    clock: HandClock,
    checks: _SignatureChecks,
    audience: str,
    method: str,
    advance: float,
    reason: str,
) -> None:
    registry = SelfMinted()
    token = _token(_minting(ring, clock, registry))
    clock.now += advance

    with pytest.raises(TokenRejected) as caught:
        _verifier(ring, clock, registry).verify_preflight(token, audience=audience, method=method)

    assert caught.value.reason == reason
    assert checks.count == 0, "refused on its claims, not on a signature it was spared"


def test_a_self_minted_token_dies_with_its_signing_key(ring: HandRing, clock: HandClock) -> None:
    registry = SelfMinted()
    token = _token(_minting(ring, clock, registry))
    ring.accepted.clear()  # the key left the accepted set (rotation's end)

    with pytest.raises(TokenRejected) as caught:
        _verifier(ring, clock, registry).verify_preflight(token, audience=AUDIENCE, method=METHOD)

    assert caught.value.reason == "unknown_key"


@pytest.mark.parametrize("segment", [0, 1, 2])
def test_a_tampered_copy_of_a_self_minted_token_is_checked_in_full_and_refused(
    ring: HandRing, clock: HandClock, checks: _SignatureChecks, segment: int
) -> None:
    registry = SelfMinted()
    token = _token(_minting(ring, clock, registry))
    parts = token.split(".")
    # Flip one character in the middle of a segment, keeping it valid base64url.
    middle = len(parts[segment]) // 2
    flipped = "A" if parts[segment][middle] != "A" else "B"
    parts[segment] = parts[segment][:middle] + flipped + parts[segment][middle + 1 :]
    tampered = ".".join(parts)

    with pytest.raises(TokenRejected):
        _verifier(ring, clock, registry).verify_preflight(
            tampered, audience=AUDIENCE, method=METHOD
        )

    assert registry.recognised == 0
    assert registry.pending == 1, "the genuine token is still waiting for its own call"


def test_tokens_of_other_channels_are_not_remembered(ring: HandRing, clock: HandClock) -> None:
    registry = SelfMinted()
    _token(_minting(ring, clock, None))
    assert registry.pending == 0


def test_a_verifier_without_a_registry_checks_every_signature(
    ring: HandRing, clock: HandClock, checks: _SignatureChecks
) -> None:
    token = _token(_minting(ring, clock, SelfMinted()))
    _verifier(ring, clock, None).verify_preflight(token, audience=AUDIENCE, method=METHOD)
    assert checks.count == 1


def test_the_registry_is_bounded_and_forgets_the_oldest_first(
    ring: HandRing, clock: HandClock, checks: _SignatureChecks
) -> None:
    registry = SelfMinted(capacity=2)
    minting = _minting(ring, clock, registry)
    first, second, third = (_token(minting) for _ in range(3))
    verifier = _verifier(ring, clock, registry)

    for token in (first, second, third):
        verifier.verify_preflight(token, audience=AUDIENCE, method=METHOD)

    assert registry.pending == 0
    assert registry.recognised == 2
    assert checks.count == 1, "the forgotten (oldest) token is verified in full, and passes"


def test_the_registry_holds_under_concurrent_minting_and_taking() -> None:
    registry = SelfMinted(capacity=64)
    taken = [0] * 4

    def work(worker: int) -> None:
        for i in range(5_000):
            token = f"t{worker}.{i}"
            claims = PreflightClaims("i", "s", AUDIENCE, METHOD, "r", token, 0, 60, "")
            registry.remember(token, claims, "k1")
            known = registry.take(token)
            if known is not None:
                assert known == (claims, "k1")
                taken[worker] += 1

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert registry.pending <= 64
    assert registry.recognised == sum(taken)
    assert sum(taken) > 0
