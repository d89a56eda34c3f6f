"""What the watch hub holds: each node's current state and each change, encoded once."""

from __future__ import annotations

from dataclasses import dataclass

from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.services.node_registry import watch_encoding
from ppos.controlplane.services.node_registry.convert import READINESS_NAME, node_to_proto
from ppos.controlplane.services.node_registry.filters import NodeQuery, NodeView
from ppos.controlplane.services.node_registry.models import NodeRow


@dataclass(frozen=True, slots=True)
class CachedNode:
    view: NodeView
    node: bytes  # the encoded Node message
    version: int


class NodeChange:
    """One node change, encoded once; framed lazily per event type."""

    __slots__ = ("_framed", "cur", "node", "node_id", "prev", "version")

    def __init__(
        self, version: int, node_id: str, prev: NodeView | None, cur: NodeView | None, node: bytes
    ) -> None:
        self.version = version
        self.node_id = node_id
        self.prev = prev
        self.cur = cur
        self.node = node
        self._framed: dict[int, bytes] = {}

    def event_type(self, query: NodeQuery) -> int | None:
        """What this change is for a subscriber with `query` (None: not for it)."""
        if query.everything:
            was, now = self.prev is not None, self.cur is not None
        else:
            was = self.prev is not None and query.matches(self.prev)
            now = self.cur is not None and query.matches(self.cur)
        if was and now:
            return watch_encoding.MODIFIED
        if now:
            return watch_encoding.ADDED
        if was:
            return watch_encoding.DELETED
        return None

    def framed(self, event_type: int) -> bytes:
        data = self._framed.get(event_type)
        if data is None:
            data = self._framed[event_type] = watch_encoding.framed_event(
                event_type, self.version, self.node
            )
        return data


def encode_node(row: NodeRow) -> bytes:
    return node_to_proto(row).SerializeToString()


def view_of(node: node_pb2.Node) -> NodeView:
    return NodeView(
        node.spec.region,
        node.spec.cluster,
        READINESS_NAME.get(node.status.readiness, ""),
        node.status.container.image,
        dict(node.meta.labels),
    )
