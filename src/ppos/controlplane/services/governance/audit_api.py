"""The audit log, for operators: list it, or follow it as it is written.

Entries are written by every service in the transaction of the change they
record; this reads the shared table. On PostgreSQL ids come from a sequence
and transactions commit in any order, so an id can become visible after a
higher one: the watch delivers ids in order and waits (up to a grace period)
for a missing id to commit before it moves past it, so it neither skips an
entry that commits late nor stalls on an id that a rolled-back transaction
used up.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator

from ppos.controlplane.common.v1 import resource_pb2 as common_pb
from ppos.controlplane.core.errors import Unavailable
from ppos.controlplane.core.pagination import page_size
from ppos.controlplane.core.timeutil import to_timestamp
from ppos.controlplane.core.validation import AUDIT_RESOURCE_ID, RESOURCE_KIND, Violations
from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import resources_pb2 as res_pb
from ppos.controlplane.services.governance import audit_queries
from ppos.controlplane.services.governance.common import Context, stopped_within
from ppos.controlplane.services.governance.handler_base import HandlerBase
from ppos.controlplane.storage.audit import AuditEntry


def entry_to_proto(row: AuditEntry) -> res_pb.AuditEntry:
    return res_pb.AuditEntry(
        audit_id=row.audit_id,
        actor=common_pb.Actor(kind=row.actor_kind, name=row.actor_name),
        method=row.method,
        resource_kind=row.resource_kind,
        resource_id=row.resource_id,
        before_json=row.before_json,
        after_json=row.after_json,
        request_id=row.request_id,
        create_time=to_timestamp(row.created_at),
        service=row.service,
        reason=row.reason,
    )


class AuditHandlers(HandlerBase):
    rpcs = ("ListAuditEntries", "WatchAuditEntries")

    async def ListAuditEntries(
        self, request: pb.ListAuditEntriesRequest, context: Context
    ) -> pb.ListAuditEntriesResponse:
        violations = Violations()
        if request.after_audit_id < 0:
            violations.add("after_audit_id", "must not be negative")
        violations.syntax("resource_kind", request.resource_kind, RESOURCE_KIND, required=False)
        violations.syntax("resource_id", request.resource_id, AUDIT_RESOURCE_ID, required=False)
        violations.raise_if_any()
        size = page_size(request.page_size)

        rows = await self._db.read(
            lambda session: audit_queries.entries_page(
                session, request.after_audit_id, request.resource_kind, request.resource_id, size
            )
        )
        return pb.ListAuditEntriesResponse(
            entries=[entry_to_proto(r) for r in rows[:size]], has_more=len(rows) > size
        )

    async def WatchAuditEntries(
        self, request: pb.WatchAuditEntriesRequest, context: Context
    ) -> AsyncIterator[pb.WatchAuditEntriesResponse]:
        violations = Violations()
        if request.after_audit_id < 0:
            violations.add("after_audit_id", "must not be negative")
        violations.syntax("resource_kind", request.resource_kind, RESOURCE_KIND, required=False)
        violations.raise_if_any()
        last = request.after_audit_id
        if last == 0:
            last = await self._db.read(audit_queries.newest_id)
        grace = self._settings.audit_gap_grace
        gap_seen_at: float | None = None
        stop = self._deps.shutdown
        while True:
            rows = await self._db.read(functools.partial(audit_queries.entries_after, last))
            for row in rows:
                if row.audit_id != last + 1:
                    now = time.monotonic()
                    gap_seen_at = gap_seen_at or now
                    if now - gap_seen_at < grace:
                        break  # an earlier id may still be committing: wait for it
                gap_seen_at = None
                last = row.audit_id
                if not request.resource_kind or row.resource_kind == request.resource_kind:
                    yield pb.WatchAuditEntriesResponse(entry=entry_to_proto(row))
            else:
                if len(rows) == audit_queries.WATCH_BATCH:
                    continue
            if await stopped_within(stop, self._settings.governance_watch_poll):
                raise Unavailable(
                    "server shutting down: call WatchAuditEntries again with "
                    f"after_audit_id={last} to continue where this stream ended",
                    reason="SHUTTING_DOWN",
                )
