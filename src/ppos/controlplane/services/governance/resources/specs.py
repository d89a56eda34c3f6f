"""Validation of the resources operators declare (tenants, queues, partners, routes).

These checks need no database: shape, ranges, known enum values, every problem
at once. References to other resources (a partner, a tenant) are checked
inside the write transaction.
"""

from __future__ import annotations

from ppos.controlplane.core.validation import MAX_DISPLAY_NAME, MAX_ENUM_FILTER, Violations
from ppos.controlplane.governance.v1 import resources_pb2 as pb
from ppos.controlplane.services.governance.enums import GOVERNANCE_STATE, QUEUE_STATE
from ppos.controlplane.services.governance.models import MAX_CAPACITY

MAX_NAME = MAX_DISPLAY_NAME
MAX_PRIORITY = 1000


def _name(violations: Violations, field: str, value: str) -> None:
    violations.text(field, value, max_length=MAX_NAME)


def _region(violations: Violations, field: str, value: str, *, required: bool = False) -> None:
    violations.region(field, value, required=required)


def _optional_id(violations: Violations, field: str, value: str) -> None:
    if value:
        violations.resource_id(field, value)


def validate_tenant_spec(violations: Violations, field: str, spec: pb.TenantSpec) -> None:
    _name(violations, f"{field}.display_name", spec.display_name)
    _region(violations, f"{field}.default_region", spec.default_region)
    _optional_id(violations, f"{field}.default_partner_id", spec.default_partner_id)


def validate_queue_spec(
    violations: Violations, field: str, spec: pb.QueueSpec, *, default_region: str | None
) -> None:
    """`default_region` None: the tenant's default is not known here (checked later)."""
    if not spec.region and default_region == "":
        violations.add(f"{field}.region", "is required (the tenant names no default region)")
    _region(violations, f"{field}.region", spec.region)
    violations.int_range(f"{field}.capacity", spec.capacity, 1, MAX_CAPACITY)
    known = not spec.state or QUEUE_STATE.is_known(spec.state)
    if not known:
        violations.add(f"{field}.state", f"{spec.state} is not a queue state")
    elif spec.state == pb.QUEUE_STATE_HELD:
        violations.add(
            f"{field}.state",
            "HELD is shown while the queue's gateway cannot be reached; it cannot be set",
        )
    held = known and spec.state not in (0, pb.QUEUE_STATE_ACTIVE)
    violations.reason(f"{field}.reason", spec.reason, required=held)
    violations.int_range(f"{field}.priority", spec.priority, -MAX_PRIORITY, MAX_PRIORITY)


def validate_partner(
    violations: Violations, partner_id: str, display_name: str, region: str
) -> None:
    violations.resource_id("partner_id", partner_id)
    _name(violations, "display_name", display_name)
    _region(violations, "region", region, required=True)


def validate_route_spec(
    violations: Violations, field: str, spec: pb.PartnerRouteSpec, *, tenant_given: bool = True
) -> None:
    if tenant_given:
        violations.resource_id(f"{field}.tenant_id", spec.tenant_id)
    _optional_id(violations, f"{field}.queue_id", spec.queue_id)
    violations.resource_id(f"{field}.partner_id", spec.partner_id)
    violations.int_range(f"{field}.priority", spec.priority, 0, MAX_PRIORITY)
    seen: set[int] = set()
    states = spec.condition.governance_states
    bounded = violations.at_most(f"{field}.condition.governance_states", states, MAX_ENUM_FILTER)
    for index, state in enumerate(states if bounded else ()):
        path = f"{field}.condition.governance_states[{index}]"
        if not GOVERNANCE_STATE.is_known(state):
            violations.add(path, f"{state} is not a governance state")
        elif state in seen:
            violations.add(path, f"{GOVERNANCE_STATE.to_name(state)} is listed twice")
        seen.add(state)
    _region(violations, f"{field}.condition.source_region", spec.condition.source_region)
    if spec.fallback_partner_id:
        violations.resource_id(f"{field}.fallback_partner_id", spec.fallback_partner_id)
        if spec.fallback_partner_id == spec.partner_id:
            violations.add(
                f"{field}.fallback_partner_id",
                "must differ from partner_id (a route may not fall back to itself)",
            )
