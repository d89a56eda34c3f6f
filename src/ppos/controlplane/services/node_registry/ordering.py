"""ListNodes' orders: the column each sorts by, and what its page tokens hold.

Every order ends with node_id, so it is total: the keyset position after a page
is (the sort column's value, node id) of its last node. A token is bound to its
order and direction (they are part of its filter digest), so a token of one
order is refused by another. The node-id order ascending keeps the position and
digest it always had, so tokens issued before orders existed stay good.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, or_
from sqlalchemy.orm import InstrumentedAttribute

from ppos.controlplane.core.pagination import Ident, Listing, Position, Text
from ppos.controlplane.core.validation import Violations
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.services.node_registry.models import NodeRow

METHOD = "/ppos.controlplane.noderegistry.v1.NodeRegistryService/ListNodes"


@dataclass(frozen=True)
class NodeOrder:
    name: str
    column: InstrumentedAttribute[str] | None  # None: node id alone
    listing: Listing

    @property
    def keys(self) -> list[InstrumentedAttribute[str]]:
        return [NodeRow.node_id] if self.column is None else [self.column, NodeRow.node_id]

    def position(self, row: NodeRow) -> Position:
        return tuple(getattr(row, key.key) for key in self.keys)


BY_ID = NodeOrder("NODE_ID", None, Listing(METHOD, Ident("node_id")))


def _by(name: str, column: InstrumentedAttribute[str]) -> NodeOrder:
    return NodeOrder(name, column, Listing(METHOD, Text(column.key), Ident("node_id")))


ORDERS: dict[int, NodeOrder] = {
    pb.NODE_ORDER_UNSPECIFIED: BY_ID,
    pb.NODE_ORDER_NODE_ID: BY_ID,
    pb.NODE_ORDER_REGION: _by("REGION", NodeRow.region),
    pb.NODE_ORDER_READINESS: _by("READINESS", NodeRow.readiness),
    pb.NODE_ORDER_CONTAINER_IMAGE: _by("CONTAINER_IMAGE", NodeRow.container_image),
}


def parse_order(value: int, violations: Violations, field: str = "order_by") -> NodeOrder:
    order = ORDERS.get(value)
    if order is None:
        violations.add(field, f"is not a NodeOrder value, got {value}")
        return BY_ID
    return order


def token_filters(order: NodeOrder, descending: bool, fingerprint: Any) -> dict[str, Any]:
    """What a page token is bound to besides the method: the filter, the order, the
    direction (the default order and direction as before orders existed)."""
    if order is BY_ID and not descending:
        return {"filter": fingerprint}
    return {"filter": fingerprint, "order": order.name, "descending": descending}


def after(order: NodeOrder, position: Position, descending: bool) -> ColumnElement[bool]:
    """Rows past `position` in the order: (k1, k2) > (v1, v2), written out because
    row-value comparison is not portable."""
    keys = order.keys
    past: ColumnElement[bool] | None = None
    for i in reversed(range(len(keys))):
        step = keys[i] < position[i] if descending else keys[i] > position[i]
        past = step if past is None else or_(step, and_(keys[i] == position[i], past))
    assert past is not None  # an order has at least one key
    return past
