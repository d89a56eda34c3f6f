"""When a failed call to a receiver or peer is tried again, and how soon."""

from __future__ import annotations

import random

import grpc

# Status codes that mean "not now": the command is held and retried.
TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        # Keys may be rotating: the receiver has not fetched the new JWKS yet.
        grpc.StatusCode.UNAUTHENTICATED,
    }
)


def backoff_seconds(attempts: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: between half and all of base * 2^(n-1), capped."""
    delay = min(cap, base * 2.0 ** max(0, attempts - 1))
    return delay * (0.5 + rng.random() / 2)
