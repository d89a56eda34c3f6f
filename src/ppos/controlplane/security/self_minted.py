"""The PREFLIGHT_JWTs this process minted for calls back to itself (see SelfMinted)."""

from __future__ import annotations

import threading

from ppos.controlplane.security.claims import PreflightClaims


class SelfMinted:
    """The PREFLIGHT_JWTs this process signed for calls to itself, until presented once.

    In the one-port deployment a peer hop leaves through our own port and comes
    straight back to this process, presenting a token signed here a moment ago.
    Finding that exact string among the tokens we signed proves what parsing it
    and checking its signature would: only the holder of the private key could
    have made those bytes, and we made them, with the claims remembered beside
    them. So the verifier takes the claims from here instead of from the bytes
    and runs every check that can still fail (its key still accepted, issuer,
    audience, expiry, issue time, lifetime, method).

    Only outbound channels to our own port remember their tokens (see
    `open_channel(loopback=...)`). A token is forgotten when it is presented
    (it was minted for one call; a replay is verified in full) or when the
    registry is full (oldest first): forgetting costs only a full verification
    later. Bounded memory: `capacity` tokens of about 550 bytes. A replica on
    the same database holds its own: a token one replica minted and another
    receives is verified in full, as it must be.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self._lock = threading.Lock()
        # token -> (its claims, the kid it was signed with); insertion order: oldest first
        self._tokens: dict[str, tuple[PreflightClaims, str]] = {}
        self._capacity = capacity
        self.recognised = 0  # tokens taken back: signature checks saved

    def remember(self, token: str, claims: PreflightClaims, kid: str) -> None:
        with self._lock:
            self._tokens[token] = (claims, kid)
            if len(self._tokens) > self._capacity:
                del self._tokens[next(iter(self._tokens))]

    def take(self, token: str) -> tuple[PreflightClaims, str] | None:
        """The claims and kid of `token` if this process minted it and has not seen
        it presented yet; None otherwise."""
        with self._lock:
            known = self._tokens.pop(token, None)
            if known is not None:
                self.recognised += 1
            return known

    @property
    def pending(self) -> int:
        """Tokens remembered and not presented yet."""
        return len(self._tokens)
