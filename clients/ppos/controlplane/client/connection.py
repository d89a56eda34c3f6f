"""One channel to the control plane, and how every call goes over it.

Each call gets the operator's bearer token (unless the method is open), an
`x-request-id` that stays the same across retries (so the server's logs and
audit tie the attempts together), a deadline that bounds all attempts
together, and retries with exponential backoff and full jitter, waiting at
least as long as the server's RetryInfo asks: of UNAVAILABLE always, and of
ABORTED (the call lost to a concurrent change, and nothing of it happened)
when the request carries an id the server deduplicates by (`request_id`,
`idempotency_key`), so a repeat can never act twice. Failures come back as
the exceptions of `errors`.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import grpc

from ppos.controlplane.client.config import ClientConfig, channel_credentials
from ppos.controlplane.client.errors import ControlPlaneError, from_rpc_error

Req = TypeVar("Req")
Resp = TypeVar("Resp")

CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.enable_retries", 0),  # retries are ours: one policy, visible, deadline-bound
    ("grpc.primary_user_agent", "pposctl"),
    # -- load balancing: calls round-robin over every address the target resolves
    # to (`dns:///` a headless Service, or an `ipv4:` list), not one pinned pod.
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.dns_min_time_between_resolutions_ms", 5_000),
    # -- end load balancing
)
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
# Request fields by which the server recognises a repeated call and answers it
# with the first call's result.
IDEMPOTENCY_FIELDS = ("request_id", "idempotency_key")


def carries_request_id(request: object) -> bool:
    """Whether `request` names itself by an id the server deduplicates by."""
    descriptor = getattr(request, "DESCRIPTOR", None)
    fields = getattr(descriptor, "fields_by_name", {})
    return any(
        name in fields and isinstance(getattr(request, name), str) and getattr(request, name)
        for name in IDEMPOTENCY_FIELDS
    )


def retryable(code: grpc.StatusCode, *, idempotent: bool) -> bool:
    """UNAVAILABLE always; ABORTED only when repeating the call cannot act twice."""
    return code == grpc.StatusCode.UNAVAILABLE or (idempotent and code == grpc.StatusCode.ABORTED)


def new_request_id(prefix: str = "req") -> str:
    """Time-ordered id like the server's: `req_` and 26 Crockford base32 characters."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        value, index = divmod(value, 32)
        chars.append(_ALPHABET[index])
    return f"{prefix}_" + "".join(reversed(chars))


class Stream(Generic[Resp]):
    """A server stream: iterate it for messages; `cancel()` ends it from any thread."""

    def __init__(self, call: Any, method: str) -> None:
        self._call = call
        self._method = method

    def __iter__(self) -> Iterator[Resp]:
        try:
            yield from self._call
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED and self._call.cancelled():
                return  # we ended it ourselves
            raise from_rpc_error(exc, method=self._method) from None

    def cancel(self) -> None:
        self._call.cancel()

    def __enter__(self) -> Stream[Resp]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class Connection:
    """A channel plus the call policy. Thread-safe; close it when done."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        channel: grpc.Channel | None = None,
        sleep: Callable[[float], None] = time.sleep,
        address: str | None = None,
    ) -> None:
        self.config = config
        self.address = address or config.address
        self._sleep = sleep
        self._lock = threading.Lock()
        self.attempts_made = 0  # every attempt, for callers and tests that want to know
        if channel is not None:
            self.channel = channel
        elif (credentials := channel_credentials(config)) is not None:
            self.channel = grpc.secure_channel(self.address, credentials, CHANNEL_OPTIONS)
        else:
            self.channel = grpc.insecure_channel(self.address, CHANNEL_OPTIONS)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def metadata(
        self, *, authenticated: bool, request_id: str, bearer: str | None = None
    ) -> tuple[tuple[str, str], ...]:
        items = [("x-request-id", request_id)]
        if bearer is not None:  # another credential: a node's, or an enrollment token
            items.append(("authorization", f"Bearer {bearer}"))
        elif authenticated:
            token = self.config.require_token()
            items.append(("authorization", f"Bearer {token.value}"))
        return tuple(items)

    def _backoff(self, attempt: int, error: ControlPlaneError) -> float:
        policy = self.config.retry
        ceiling = min(policy.max_backoff, policy.initial_backoff * policy.multiplier**attempt)
        delay = random.uniform(0, ceiling)  # noqa: S311 - jitter, not security
        if error.retry_after is not None:
            delay = max(delay, min(error.retry_after, policy.max_backoff))
        return delay

    def unary(
        self,
        method: grpc.UnaryUnaryMultiCallable[Req, Resp],
        request: Req,
        *,
        name: str,
        authenticated: bool = True,
        timeout: float | None = None,
        request_id: str | None = None,
        retry: bool = True,
        bearer: str | None = None,
    ) -> Resp:
        """Call `method`, retrying UNAVAILABLE (and ABORTED, when `request` carries a
        request id) until the deadline or the attempt limit."""
        idempotent = carries_request_id(request)
        budget = self.config.timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        metadata = self.metadata(
            authenticated=authenticated, request_id=request_id or new_request_id(), bearer=bearer
        )
        attempt = 0
        while True:
            attempt += 1
            with self._lock:
                self.attempts_made += 1
            remaining = deadline - time.monotonic()
            try:
                return method(request, timeout=max(remaining, 0.001), metadata=metadata)
            except grpc.RpcError as exc:
                error = from_rpc_error(exc, method=name, attempts=attempt)
            if not retry or not retryable(error.code, idempotent=idempotent):
                raise error
            if attempt >= self.config.retry.max_attempts:
                raise error
            delay = self._backoff(attempt - 1, error)
            if time.monotonic() + delay >= deadline:
                raise error
            self._sleep(delay)

    def stream(
        self,
        method: grpc.UnaryStreamMultiCallable[Req, Resp],
        request: Req,
        *,
        name: str,
        authenticated: bool = True,
        timeout: float | None = None,
        request_id: str | None = None,
    ) -> Stream[Resp]:
        """Open a server stream. No deadline unless given: watches run until cancelled."""
        metadata = self.metadata(
            authenticated=authenticated, request_id=request_id or new_request_id()
        )
        with self._lock:
            self.attempts_made += 1
        call = method(request, timeout=timeout, metadata=metadata)
        return Stream(call, name)
