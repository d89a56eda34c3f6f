"""Exit codes scripts can rely on: one per class of failure, stable across versions."""

from __future__ import annotations

import grpc

OK = 0
USAGE = 1  # bad flags or arguments: nothing was sent
CONFIG = 2  # no or unreadable token, bad address or CA file: nothing was sent
UNAVAILABLE = 3  # server unreachable or UNAVAILABLE after every retry: try again later
UNAUTHENTICATED = 4  # no valid control token
PERMISSION_DENIED = 5  # a valid credential that may not do this
NOT_FOUND = 6  # the named resource does not exist
ALREADY_EXISTS = 7  # it exists already (or the request id was used with another body)
CONFLICT = 8  # FAILED_PRECONDITION or ABORTED: stale resource version, wrong state
INVALID_ARGUMENT = 9  # the server refused the request's fields (INVALID_ARGUMENT, OUT_OF_RANGE)
DEADLINE_EXCEEDED = 10  # no answer within --timeout
RESOURCE_EXHAUSTED = 11  # backpressure: retry after the delay the server gave
UNIMPLEMENTED = 12  # the server does not offer this RPC (older server, or not hosted there)
SERVER_ERROR = 13  # INTERNAL, UNKNOWN, DATA_LOSS, CANCELLED: a fault on the server side
OPERATION_FAILED = 14  # a job, sweep or command waited for ended FAILED, CANCELLED or TIMED_OUT
NOT_SERVING = 15  # `health`: a checked service is not SERVING
INTERRUPTED = 130  # Ctrl-C

_BY_STATUS = {
    grpc.StatusCode.UNAVAILABLE: UNAVAILABLE,
    grpc.StatusCode.UNAUTHENTICATED: UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED: PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND: NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION: CONFLICT,
    grpc.StatusCode.ABORTED: CONFLICT,
    grpc.StatusCode.INVALID_ARGUMENT: INVALID_ARGUMENT,
    grpc.StatusCode.OUT_OF_RANGE: INVALID_ARGUMENT,
    grpc.StatusCode.DEADLINE_EXCEEDED: DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNIMPLEMENTED: UNIMPLEMENTED,
}

TABLE = [
    (OK, "success"),
    (USAGE, "usage error: bad command, flag or argument (nothing was sent)"),
    (CONFIG, "configuration error: no or unreadable token, bad address (nothing was sent)"),
    (UNAVAILABLE, "server unreachable, or UNAVAILABLE after every retry"),
    (UNAUTHENTICATED, "UNAUTHENTICATED: the control token is missing or wrong"),
    (PERMISSION_DENIED, "PERMISSION_DENIED"),
    (NOT_FOUND, "NOT_FOUND: the named resource does not exist"),
    (ALREADY_EXISTS, "ALREADY_EXISTS"),
    (CONFLICT, "FAILED_PRECONDITION or ABORTED: stale resource version or wrong state"),
    (INVALID_ARGUMENT, "INVALID_ARGUMENT or OUT_OF_RANGE: the server refused a field"),
    (DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED: no answer within --timeout"),
    (RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED: backpressure, retry later"),
    (UNIMPLEMENTED, "UNIMPLEMENTED: the server does not offer this call"),
    (SERVER_ERROR, "INTERNAL, UNKNOWN, DATA_LOSS or CANCELLED: a server-side fault"),
    (OPERATION_FAILED, "an admin job, sweep or command waited for did not succeed"),
    (NOT_SERVING, "health: a checked service is not SERVING"),
    (INTERRUPTED, "interrupted (Ctrl-C)"),
]


def for_status(code: grpc.StatusCode) -> int:
    return _BY_STATUS.get(code, SERVER_ERROR)


def epilog() -> str:
    lines = ["exit codes:"]
    lines += [f"  {code:<4} {meaning}" for code, meaning in TABLE]
    return "\n".join(lines)
