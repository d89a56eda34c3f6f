"""The fuzz suite's judge catches what it is meant to (a check that cannot fail
would let the suite pass over anything)."""

from __future__ import annotations

import grpc

from ppos.controlplane.security.principal import PrincipalKind
from tests.fuzz.catalog import Method, methods
from tests.fuzz.runner import Caller, Case, Outcome, Report, judge

NONE = Caller(None, ())
OPERATOR = Caller(PrincipalKind.OPERATOR, (("authorization", "Bearer x"),))


def _method(name: str) -> Method:
    (found,) = [m for m in methods() if m.name == name]
    return found


def _outcome(
    code: grpc.StatusCode,
    details: str = "",
    *,
    caller: Caller = OPERATOR,
    method: str = "GetTenant",
    body: bytes = b"",
    trailer_bytes: int = 100,
    cancelled: bool = False,
) -> Outcome:
    case = Case(_method(method), caller, body, "mutated", "fz-oracle-1")
    return Outcome(case, code, details, trailer_bytes, details, cancelled_by_us=cancelled)


def test_a_clean_refusal_passes() -> None:
    assert judge(_outcome(grpc.StatusCode.NOT_FOUND, "tenant 'x' not found")) is None
    assert judge(_outcome(grpc.StatusCode.UNAUTHENTICATED, "no credential", caller=NONE)) is None
    assert judge(_outcome(grpc.StatusCode.OK, caller=NONE, method="GetJwks")) is None


def test_what_must_never_happen_is_caught() -> None:
    cases = {
        "status": _outcome(grpc.StatusCode.INTERNAL, "internal error"),
        "no answer in time": _outcome(grpc.StatusCode.DEADLINE_EXCEEDED),
        "trailers over 8192 B": _outcome(grpc.StatusCode.NOT_FOUND, trailer_bytes=8193),
        "names '<class '": _outcome(grpc.StatusCode.INVALID_ARGUMENT, "<class 'KeyError'>"),
        "names 'SELECT'": _outcome(grpc.StatusCode.INVALID_ARGUMENT, "bad: SELECT x FROM t"),
        "names 'edge.py'": _outcome(grpc.StatusCode.INVALID_ARGUMENT, 'File "edge.py"'),
        "served a none caller": _outcome(grpc.StatusCode.OK, caller=NONE),
    }
    for what, outcome in cases.items():
        found = judge(outcome)
        assert found is not None, what
        assert what in found.what, (what, found)
    stream = _outcome(grpc.StatusCode.CANCELLED, caller=NONE, method="WatchNodes", cancelled=True)
    found = judge(stream)
    assert found is not None
    assert "served a none caller" in found.what


def test_text_the_caller_sent_is_an_echo_not_a_leak() -> None:
    echoed = _outcome(
        grpc.StatusCode.NOT_FOUND, "tenant 'SELECT 1' not found", body=b"\x0a\x08SELECT 1"
    )
    assert judge(echoed) is None


def test_failures_group_by_place_across_methods() -> None:
    report = Report()
    for method in ("GetTenant", "GetQueue"):
        report.add(
            _outcome(
                grpc.StatusCode.UNKNOWN, f"Unexpected <class 'X'>: type '{method}'", method=method
            )
        )
    ((place, count, found),) = report.places()
    assert count == 2
    assert sorted(found) == ["GetQueue", "GetTenant"]
    assert "'…'" in place
