"""Resumes from before the memory window: the missed changes read from the change log.

A process's window holds the changes since it loaded (or since its last trim);
the database's change log holds every change of the last `event_retention`.
A subscriber resuming from a version the window no longer holds but the log
does (after a restart, on another replica, after a long disconnection) gets
the changes in between read from the log, framed like the window's, and then
continues from the window. RESYNC_REQUIRED is answered only for a version the
log has pruned (its horizon, `node_event_log.pruned_through`) or a gap of more
than `watch_replay_max` changes.

Each change's event type needs the node's filter view before it: the previous
logged event of that node (its payload, with the readiness the change itself
recorded as `previous_readiness`), or none for a node the change created.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.services.node_registry.changelog import pruned_through
from ppos.controlplane.services.node_registry.filters import NodeView
from ppos.controlplane.services.node_registry.models import NodeEventRow, NodeRow
from ppos.controlplane.services.node_registry.watch_changes import NodeChange, encode_node, view_of
from ppos.controlplane.services.node_registry.watch_subscribers import Subscriber
from ppos.controlplane.services.node_registry.watch_window import ChangeWindow, chunk_messages
from ppos.controlplane.storage.database import Database

REPLAY_BATCH = 5000
NODE_BATCH = 500  # node ids per IN (...) list


@dataclass(frozen=True)
class Replay:
    changes: list[NodeChange]
    through: int  # the last version read (the batch's end when it is full)
    horizon: int  # pruned_through, read after the events


def read_replay(
    session: Session, after: int, through: int, views: dict[str, NodeView | None]
) -> Replay:
    """The changes in (after, through], at most REPLAY_BATCH; `views` holds each
    node's view as of the last change seen and is updated."""
    result = session.execute(
        select(
            NodeEventRow.event_id,
            NodeEventRow.node_id,
            NodeEventRow.payload,
            NodeEventRow.previous_readiness,
            NodeRow,
        )
        .outerjoin(
            NodeRow,
            and_(NodeRow.node_id == NodeEventRow.node_id, NodeEventRow.payload.is_(None)),
        )
        .where(NodeEventRow.event_id > after, NodeEventRow.event_id <= through)
        .order_by(NodeEventRow.event_id)
        .limit(REPLAY_BATCH)
    ).all()
    # Read after the events: if pruning passed `after` meanwhile, events may be missing.
    horizon = pruned_through(session)
    unknown = {str(r.node_id) for r in result if r.previous_readiness and r.node_id not in views}
    views.update(_views_before(session, after, unknown))
    changes = []
    for event_id, node_id, payload, previous_readiness, node in result:
        version = int(event_id)
        if payload is not None:
            data = bytes(payload)
            cur: NodeView | None = view_of(node_pb2.Node.FromString(data))
        elif node is not None and node.resource_version == version:
            data, cur = encode_node(node), NodeView.of(node)
        else:
            data, cur = b"", None  # superseded: a later change carries the node
        known = views.get(node_id)
        prev = None
        if previous_readiness:  # the node existed before this change
            base = known if known is not None else cur
            if base is not None:
                prev = dataclasses.replace(base, readiness=str(previous_readiness))
        if cur is not None:
            changes.append(NodeChange(version, str(node_id), prev, cur, data))
            views[str(node_id)] = cur
        elif prev is not None:
            views[str(node_id)] = prev
    last = int(result[-1][0]) if len(result) == REPLAY_BATCH else through
    return Replay(changes, last, horizon)


def _views_before(session: Session, version: int, node_ids: Iterable[str]) -> dict[str, NodeView]:
    """Each node's view as of its last logged change with a payload up to `version`
    (nodes without one are left out: their state predates the log's horizon)."""
    views: dict[str, NodeView] = {}
    pending = sorted(node_ids)
    for start in range(0, len(pending), NODE_BATCH):
        chunk = pending[start : start + NODE_BATCH]
        latest = (
            select(NodeEventRow.node_id, func.max(NodeEventRow.event_id).label("last"))
            .where(
                NodeEventRow.event_id <= version,
                NodeEventRow.payload.is_not(None),
                NodeEventRow.node_id.in_(chunk),
            )
            .group_by(NodeEventRow.node_id)
            .subquery()
        )
        rows = session.execute(
            select(NodeEventRow.node_id, NodeEventRow.payload).join(
                latest, NodeEventRow.event_id == latest.c.last
            )
        )
        for node_id, payload in rows:
            views[str(node_id)] = view_of(node_pb2.Node.FromString(bytes(payload or b"")))
    return views


async def place_from_log(
    db: Database, window: ChangeWindow, sub: Subscriber, resume_from: int, limit: int
) -> bool:
    """Queue the changes after `resume_from` that the window no longer holds as
    `sub`'s first messages and place it at the window's floor; False when the
    log no longer holds them all (the subscriber must resync)."""
    views: dict[str, NodeView | None] = {}
    events: list[bytes] = []
    after = resume_from
    # The window may trim (or reload) while the log is read: read until the
    # floor is reached with no await between that check and the placing.
    while after < window.floor:
        if window.floor - resume_from > limit:
            return False
        replay = await db.read(
            functools.partial(read_replay, after=after, through=window.floor, views=views)
        )
        if replay.horizon > after:
            return False
        for change in replay.changes:
            kind = change.event_type(sub.query)
            if kind is not None:
                events.append(change.framed(kind))
        after = replay.through
    if not window.place(sub, after):
        return False
    sub.snapshot = chunk_messages(events) if events else None
    if events:
        # Until the queued messages are sent, a cut-off tells to resume from here.
        sub.sent_version, sub.replay_through = resume_from, after
    return True
