"""What every governance handler shares: the database, versions, idempotency, paging."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from sqlalchemy import and_, or_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import AlreadyExists
from ppos.controlplane.core.pagination import Listing, PageTokens, Position, page_size
from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.core.validation import REQUEST_ID, Violations
from ppos.controlplane.runtime.modules import Runtime
from ppos.controlplane.services.governance.models import RequestRow
from ppos.controlplane.storage import audit
from ppos.controlplane.storage.database import Database
from ppos.controlplane.storage.locks import advisory_key, transaction_lock

SERVICE = "governance"
T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]


def _nothing() -> None:
    return None


class HandlerBase:
    """Base of the handler groups that make up the GovernanceService servicer.

    `on_commands` is called after a transaction that wrote outbox commands has
    committed, so this replica's dispatcher delivers them without waiting for
    its next poll.
    """

    def __init__(self, runtime: Runtime, on_commands: Callable[[], None] = _nothing) -> None:
        self._rt = runtime
        self._settings = runtime.settings.governance
        self._on_commands = on_commands

    @property
    def _gateway_regions(self) -> list[str]:
        return sorted(self._settings.gateways)

    @property
    def _db(self) -> Database:
        return self._rt.db

    async def _write(self, work: Callable[[Session], T]) -> T:
        return await write_once(self._db, work)

    def _page(self, listing: Listing, size: int, token: str, filters: Mapping[str, Any]) -> Page:
        return Page(self._rt.page_tokens, listing, size, token, filters)


async def write_once(db: Database, work: Callable[[Session], T]) -> T:
    """Run `work` in a write transaction; on a unique-key race, run it once more.

    Two concurrent calls that both pass their existence checks (two creates of
    one id, two provisionings under one request id) meet at a unique key; the
    loser runs again and now sees the winner's row, so it answers the way it
    would have had it come second: a replay, or ALREADY_EXISTS.
    """
    try:
        return await db.write(work)
    except IntegrityError:
        return await db.write(work)


def record_change(
    session: Session, kind: str, resource_id: str, before: Any, after: Any, **extra: Any
) -> None:
    """The audit entry of one change, in the change's own transaction."""
    audit.record(
        session,
        service=SERVICE,
        resource_kind=kind,
        resource_id=resource_id,
        before=before,
        after=after,
        **extra,
    )


# -- resource versions -----------------------------------------------------------


def bump(row: Any, *, spec: bool) -> None:
    row.resource_version += 1
    if spec:
        row.generation += 1
    row.updated_at = utcnow()


# -- idempotent requests ---------------------------------------------------------


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


def find_request(session: Session, method: str, request_id: str, digest: str) -> RequestRow | None:
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


def remember_request(
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


# -- paging ------------------------------------------------------------------------

GOVERNANCE_SERVICE = "/ppos.controlplane.governance.v1.GovernanceService/"


class Page:
    """A keyset page request: its size and the position after which it continues.

    The position comes from a page token sealed by `tokens` for this listing
    and these filters (anything else is refused as INVALID_ARGUMENT)."""

    def __init__(
        self,
        tokens: PageTokens,
        listing: Listing,
        size: int,
        token: str,
        filters: Mapping[str, Any],
    ) -> None:
        self._tokens = tokens
        self._listing = listing
        self.size = page_size(size)
        self._filters = dict(filters)
        self.after: Position | None = tokens.read(listing, self._filters, token)

    def next_token(self, rows: list[Any], key: Callable[[Any], Position]) -> str:
        """Token after the last of `rows` when more may follow (rows has size+1 items)."""
        if len(rows) <= self.size:
            return ""
        return self._tokens.issue(self._listing, self._filters, key(rows[self.size - 1]))


def position(created_at: dt.datetime, ident: str) -> Position:
    """Keyset position of a row in a newest-first list."""
    return (created_at, ident)


def newest_first_after(created_column: Any, id_column: Any, after: Position | None) -> Any:
    """Condition for rows after (older than) a position, or None on the first page."""
    if after is None:
        return None
    created, ident = after
    return or_(created_column < created, and_(created_column == created, id_column < ident))


async def wait_either(first: asyncio.Event, second: asyncio.Event) -> None:
    """Return when either event is set."""
    waiters = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
