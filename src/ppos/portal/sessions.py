"""Server-side sessions: the operator's credential stays in this process's memory.

A browser holds only an opaque random session id (HttpOnly, SameSite=Strict
cookie); the credential it was exchanged for is kept here, keyed by that id, and
is sent nowhere but to the control plane. Sessions end on logout, after an idle
period and after an absolute lifetime, whichever comes first. Each has its own
CSRF token, checked on every change.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ppos.portal.plane import OperatorClients

ROLES = ("viewer", "operator", "admin")  # each may what the ones before it may
SESSION_COOKIE = "ppos_session"
SECURE_SESSION_COOKIE = "__Host-ppos_session"  # the prefix binds it to this host over TLS


@dataclass
class Session:
    """One signed-in operator: who, their clients (holding the credential), and when."""

    session_id: str = field(repr=False)
    csrf_token: str = field(repr=False)
    operator: str
    clients: OperatorClients = field(repr=False)
    created: float
    last_seen: float
    #: What the plane lets this credential do (plane.role_of): the pages offer only
    #: the actions of this role; the plane refuses the others anyway.
    role: str = "viewer"
    #: Per nodes filter, the page tokens this operator followed (for "Previous page":
    #: the plane's tokens only go forward).
    node_pages: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def may(self, role: str) -> bool:
        """Whether this operator's role is `role` or above."""
        return ROLES.index(self.role) >= ROLES.index(role)


class SessionStore:
    """Sessions in memory (a portal restart signs everyone out, by design)."""

    def __init__(
        self,
        *,
        idle_seconds: float,
        absolute_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_seconds = idle_seconds
        self.absolute_seconds = absolute_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}

    def create(self, operator: str, clients: OperatorClients, role: str = "viewer") -> Session:
        now = self._clock()
        session = Session(
            role=role,
            session_id=secrets.token_urlsafe(32),
            csrf_token=secrets.token_urlsafe(32),
            operator=operator,
            clients=clients,
            created=now,
            last_seen=now,
        )
        with self._lock:
            self._sweep(now)
            self._sessions[session.session_id] = session
        return session

    def get(self, session_id: str | None, *, touch: bool = True) -> Session | None:
        """The live session of `session_id`, or None (unknown, idle or too old).

        `touch=False` for requests the operator did not make (live updates), so an
        open tab alone does not keep a session alive."""
        if not session_id:
            return None
        now = self._clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if self._expired(session, now):
                del self._sessions[session_id]
                return None
            if touch:
                session.last_seen = now
            return session

    def end(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _expired(self, session: Session, now: float) -> bool:
        return (
            now - session.last_seen > self.idle_seconds
            or now - session.created > self.absolute_seconds
        )

    def _sweep(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[key]


def same_token(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a CSRF token."""
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


class SignInThrottle:
    """At most `limit` failed sign-ins per client address within `window` seconds."""

    def __init__(
        self, *, limit: int = 5, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, list[float]] = {}

    def blocked_for(self, client: str) -> float:
        """Seconds until `client` may try again (0: now)."""
        now = self._clock()
        with self._lock:
            recent = [t for t in self._failures.get(client, []) if now - t < self.window]
            self._failures[client] = recent
            if len(recent) < self.limit:
                return 0.0
            return self.window - (now - recent[0])

    def failed(self, client: str) -> None:
        with self._lock:
            self._failures.setdefault(client, []).append(self._clock())

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)
