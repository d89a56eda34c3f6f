"""Idempotency by request id: one mechanism for every governance call that takes one.

A call under a request id is remembered (method, id, SHA-256 of the body
without the id) in the transaction that makes its change; the same call again
is answered from that record, and the same id with another body is refused
(ALREADY_EXISTS, REQUEST_ID_REUSED).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.message import Message
from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import AlreadyExists
from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.core.validation import REQUEST_ID, Violations
from ppos.controlplane.services.governance.common import GOVERNANCE_SERVICE
from ppos.controlplane.services.governance.models import RequestRow
from ppos.controlplane.storage.locks import advisory_key, transaction_lock

M = TypeVar("M", bound=Message)


def body_digest(request: Message, *, ignore: tuple[str, ...] = ("request_id",)) -> str:
    """SHA-256 of the request without its request id, in deterministic encoding."""
    copy = type(request)()
    copy.CopyFrom(request)
    for name in ignore:
        copy.ClearField(name)
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def validate_request_id(violations: Violations, value: str, *, required: bool) -> None:
    if not value:
        if required:
            violations.add("request_id", "is required: a client-chosen id makes the call safe")
        return
    violations.match(
        "request_id",
        value,
        REQUEST_ID,
        "must be 1 to 128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit",
    )


def _find_request(session: Session, method: str, request_id: str, digest: str) -> RequestRow | None:
    """The earlier call under this request id; ALREADY_EXISTS when its body differed.

    Call it first in the write transaction. On PostgreSQL it first takes a
    transaction lock on the request id, so concurrent calls under one id run
    one after the other: a later one finds the first one's row here instead
    of passing this look-up before the first commits and then meeting its
    tenant, queue or admin job (under READ COMMITTED) as a conflict. SQLite
    has one writer at a time already.
    """
    if not request_id:
        return None
    transaction_lock(session, advisory_key(f"governance-request:{method}:{request_id}"))
    row = session.get(RequestRow, (method, request_id))
    if row is not None and row.body_sha256 != digest:
        raise AlreadyExists(
            "request",
            request_id,
            f"request id {request_id!r} was already used for {method.rsplit('/', 1)[-1]} "
            f"with a different body (it created {row.resource_id}); use a new request id",
            reason="REQUEST_ID_REUSED",
        )
    return row


def _remember_request(
    session: Session,
    method: str,
    request_id: str,
    digest: str,
    resource_id: str,
    response: Message | None = None,
) -> None:
    if not request_id:
        return
    session.add(
        RequestRow(
            method=method,
            request_id=request_id,
            body_sha256=digest,
            resource_id=resource_id,
            response=response.SerializeToString(deterministic=True) if response else None,
            created_at=utcnow(),
        )
    )


@dataclass(frozen=True)
class IdempotentCall:
    """One call of `method` under its request id (empty: not idempotent, nothing kept)."""

    method: str
    request_id: str
    digest: str

    @classmethod
    def of(cls, method: str, request: Any) -> IdempotentCall:
        """The call of GovernanceService/`method` that `request` makes."""
        return cls(GOVERNANCE_SERVICE + method, request.request_id, body_digest(request))

    def earlier(self, session: Session) -> RequestRow | None:
        """The earlier call under this request id (call it first in the transaction)."""
        return _find_request(session, self.method, self.request_id, self.digest)

    def replay(self, session: Session, response_type: type[M]) -> M | None:
        """The reply the earlier call under this request id gave, if there was one."""
        prior = self.earlier(session)
        if prior is None or prior.response is None:
            return None
        return response_type.FromString(prior.response)

    def remember(self, session: Session, resource_id: str, response: Message | None = None) -> None:
        """Keep this call (and its reply) for its repeats, in its own transaction."""
        _remember_request(session, self.method, self.request_id, self.digest, resource_id, response)
