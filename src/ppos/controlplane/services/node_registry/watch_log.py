"""What the watch hub reads from the database: every node at once, and the change log's tail."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.services.node_registry.changelog import (
    LoggedEvent,
    consistent_snapshot,
    head_version,
    pruned_through,
)
from ppos.controlplane.services.node_registry.filters import NodeView
from ppos.controlplane.services.node_registry.models import NodeEventRow, NodeRow
from ppos.controlplane.services.node_registry.watch_changes import (
    CachedNode,
    encode_node,
    view_of,
)

TAIL_BATCH = 1000


@dataclass(frozen=True)
class TailBatch:
    rows: list[LoggedEvent]
    horizon: int


def load_nodes(session: Session) -> tuple[int, list[tuple[str, CachedNode]]]:
    """Every node, by id, in one consistent snapshot with the version it reflects."""
    consistent_snapshot(session)
    head = head_version(session)
    nodes = [
        (row.node_id, CachedNode(NodeView.of(row), encode_node(row), row.resource_version))
        for row in session.scalars(select(NodeRow).order_by(NodeRow.node_id))
    ]
    return head, nodes


def read_tail(session: Session, after: int, limit: int) -> TailBatch:
    """Events after `after`, each with the node as of its version (one statement).

    Events written by RPCs carry their node. The sweep's set-based events do
    not: the node row is read instead, which is the node as of that version
    unless the node changed again since; such a superseded sweep event is
    folded into the later change (a watcher sees the later state only).
    """
    result = session.execute(
        select(NodeEventRow.event_id, NodeEventRow.node_id, NodeEventRow.payload, NodeRow)
        .outerjoin(
            NodeRow,
            and_(NodeRow.node_id == NodeEventRow.node_id, NodeEventRow.payload.is_(None)),
        )
        .where(NodeEventRow.event_id > after)
        .order_by(NodeEventRow.event_id)
        .limit(limit)
    ).all()
    rows: list[LoggedEvent] = []
    for event_id, node_id, payload, node in result:
        version = int(event_id)
        if payload is not None:
            data = bytes(payload)
            rows.append((version, str(node_id), view_of(node_pb2.Node.FromString(data)), data))
        elif node is not None and node.resource_version == version:
            rows.append((version, str(node_id), NodeView.of(node), encode_node(node)))
        else:
            rows.append((version, str(node_id), None, b""))  # superseded or gone
    # Read after the events: if pruning passed `after` meanwhile, events may be missing.
    return TailBatch(rows, pruned_through(session))
