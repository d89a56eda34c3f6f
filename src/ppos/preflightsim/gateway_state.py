"""What the simulated gateway was asked to do, each call it received, and the
faults it is told to inject (tests read and change these)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class GatewayFaults:
    """Faults to inject; change the fields at any time (tests do)."""

    unavailable_rate: float = 0.0
    unavailable_next: int = 0
    # Delay before acting on a command (the call is slow, nothing done yet).
    slow_seconds: float = 0.0
    # Delay after acting, before answering (the command is done, the ack is late).
    slow_ack_seconds: float = 0.0
    drop_rate: float = 0.0
    drop_next: int = 0
    # Refuse the next N commands with INVALID_ARGUMENT (a receiver saying no).
    refuse_next: int = 0
    # Partners this gateway cannot hand work to: a new command naming one is answered
    # UNAVAILABLE with ErrorInfo PARTNER_UNREACHABLE (metadata partner_id), not acted on.
    unreachable_partners: set[str] = field(default_factory=set)


@dataclass
class ReceivedCall:
    """One call as the gateway received it."""

    method: str
    idempotency_key: str
    request: dict[str, Any]
    outcome: str  # applied | duplicate | superseded | unavailable | partner_unreachable | refused
    dropped: bool
    metadata: list[tuple[str, str]]
    receive_time: float
    command_id: str = ""


@dataclass
class GatewayState:
    """What the gateway was asked to do (first acceptance of each key only)."""

    queues: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    routes: dict[str, dict[str, Any]] = field(default_factory=dict)
    retries: list[dict[str, Any]] = field(default_factory=list)
    reroutes: list[dict[str, Any]] = field(default_factory=list)
    remainders: list[dict[str, Any]] = field(default_factory=list)
    reviews: list[dict[str, Any]] = field(default_factory=list)
