"""A key ring and a clock that tests change by hand."""

from __future__ import annotations

from ppos.controlplane.security.keys import PublicKey, SigningKey, new_private_key


class HandRing:
    """A key ring whose accepted set the test changes (rotation's end, by hand)."""

    def __init__(self) -> None:
        self.active = SigningKey("k1", new_private_key(), 0.0)
        self.accepted: dict[str, PublicKey] = {"k1": self.active.public_key}

    def public_key(self, kid: str) -> PublicKey | None:
        return self.accepted.get(kid)


class HandClock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now
