"""Sessions and the sign-in throttle on their own (a clock of our own)."""

from __future__ import annotations

from typing import cast

from ppos.portal.plane import OperatorClients
from ppos.portal.sessions import SessionStore, SignInThrottle, same_token

CLIENTS = cast(OperatorClients, object())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sessions_end_after_idle_time_and_absolute_lifetime() -> None:
    clock = Clock()
    store = SessionStore(idle_seconds=10, absolute_seconds=25, clock=clock)
    session = store.create("ada", CLIENTS)
    assert session.session_id != session.csrf_token
    for _ in range(2):
        clock.now += 9
        assert store.get(session.session_id) is session  # each request renews idle time
    clock.now += 9
    assert store.get(session.session_id, touch=False) is None  # 27 s: past the lifetime

    idle = store.create("bob", CLIENTS)
    clock.now += 5
    assert store.get(idle.session_id, touch=False) is idle  # live updates do not renew
    clock.now += 6
    assert store.get(idle.session_id) is None
    assert len(store) == 0
    assert store.get("") is None
    assert store.get("unknown") is None


def test_sign_ins_are_throttled_per_address_within_the_window() -> None:
    clock = Clock()
    throttle = SignInThrottle(limit=3, window=60, clock=clock)
    for _ in range(3):
        assert throttle.blocked_for("10.0.0.1") == 0
        throttle.failed("10.0.0.1")
    assert throttle.blocked_for("10.0.0.1") == 60
    assert throttle.blocked_for("10.0.0.2") == 0
    clock.now += 61
    assert throttle.blocked_for("10.0.0.1") == 0
    throttle.failed("10.0.0.1")
    throttle.succeeded("10.0.0.1")
    assert throttle.blocked_for("10.0.0.1") == 0


def test_csrf_tokens_compare_exactly() -> None:
    assert same_token("abc", "abc")
    assert not same_token("abc", "abd")
    assert not same_token("abc", "")
    assert not same_token("abc", None)
