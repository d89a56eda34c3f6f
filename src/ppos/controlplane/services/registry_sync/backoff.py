"""Which registry errors are retried, and how long to wait: full-jitter exponential backoff.

The wait before retry n (from 0) is uniform in [0, min(cap, base * 2**n)]
(AWS "full jitter"), raised to the server's RetryInfo delay when it sent one.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


@dataclass(frozen=True)
class Backoff:
    base: float
    cap: float
    attempts: int
    random: Callable[[], float] = random.random

    def delay(self, retry: int, hint: float = 0.0) -> float:
        ceiling = min(self.cap, self.base * (2**retry))
        return float(min(self.cap, max(hint, self.random() * ceiling)))


def is_retryable(error: grpc.aio.AioRpcError) -> bool:
    return error.code() in RETRYABLE


def retry_hint(error: grpc.aio.AioRpcError) -> float:
    """Seconds the server asked us to wait (google.rpc.RetryInfo), or 0."""
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:
        return 0.0
    if status is None:
        return 0.0
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return 0.0
