"""Validation of what operators declare, field by field, every problem at once.

These checks need no database: shape, ranges, known enum values, which policy
actions exist and which fit which governance state. References to other
resources (a partner, a tenant) are checked inside the write transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ppos.controlplane.core.validation import (
    DIGEST,
    IMAGE_REFERENCE,
    MAX_DISPLAY_NAME,
    MAX_ENUM_FILTER,
    MAX_MAP_ENTRIES,
    Violations,
    ascii_decimal,
    map_key_path,
    shown,
)
from ppos.controlplane.governance.v1 import resources_pb2 as pb
from ppos.controlplane.services.governance.enums import (
    GOVERNANCE_STATE,
    POLICY_ACTION,
    QUEUE_STATE,
    TRIGGER_STATES,
)
from ppos.controlplane.services.governance.models import MAX_CAPACITY

MAX_NAME = MAX_DISPLAY_NAME
MAX_PRIORITY = 1000
MAX_ACTIONS = 8
MAX_FAILURE_THRESHOLD = 1000
MAX_FAILURE_WINDOW = 30 * 86400

# Which actions make sense for which governance state. Findings are the truth
# about the customer's file: they are routed, never retried automatically.
ALLOWED_ACTIONS: dict[str, frozenset[str]] = {
    "FAILED_RUNTIME_ENVIRONMENT": frozenset({"REIMAGE_NODE", "RETRY_JOB", "CORDON_NODE"}),
    "DEGRADED": frozenset(
        {
            "LOWER_QUEUE_CAPACITY",
            "REROUTE_JOB",
            "REIMAGE_NODE",
            "CORDON_NODE",
            "ROUTE_TO_REVIEW",
        }
    ),
    "PARTIAL": frozenset({"REQUEST_REMAINDER", "REROUTE_JOB", "ROUTE_TO_REVIEW"}),
    "COMPLETED_WITH_FINDINGS": frozenset({"ROUTE_TO_REVIEW"}),
}

# Parameters each action accepts; (name, required).
ACTION_PARAMETERS: dict[str, tuple[tuple[str, bool], ...]] = {
    "REIMAGE_NODE": (("image", False), ("digest", False)),
    "RETRY_JOB": (),
    "LOWER_QUEUE_CAPACITY": (("capacity_factor", True), ("min_capacity", False)),
    "REROUTE_JOB": (("target_region", False), ("target_partner_id", False)),
    "REQUEST_REMAINDER": (),
    "ROUTE_TO_REVIEW": (("review_queue_id", False), ("partner_id", False)),
    "CORDON_NODE": (),
}


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


@dataclass(frozen=True)
class ParsedPolicy:
    """A policy spec in the stored form."""

    tenant_scope: str
    trigger_state: str
    actions: list[dict[str, Any]]
    enabled: bool
    node_failure_threshold: int
    node_failure_window_seconds: int


def _action_parameters(
    violations: Violations, path: str, kind: str, parameters: dict[str, str]
) -> None:
    accepted = dict(ACTION_PARAMETERS[kind])
    if not violations.at_most(f"{path}.parameters", parameters, MAX_MAP_ENTRIES, "parameters"):
        return
    for key in sorted(parameters):
        if key not in accepted:
            names = ", ".join(accepted) or "none"
            violations.add(
                map_key_path(f"{path}.parameters", key),
                f"is not a parameter of {kind} (it takes: {names})",
            )
    for key, required in accepted.items():
        if required and not parameters.get(key):
            violations.add(f"{path}.parameters[{key!r}]", f"is required for {kind}")
    if kind == "LOWER_QUEUE_CAPACITY":
        raw = parameters.get("capacity_factor", "")
        if raw:
            factor = ascii_decimal(raw)
            if factor is None or not 0 < factor < 1:
                violations.add(
                    f"{path}.parameters['capacity_factor']",
                    "must be a number between 0 and 1 (exclusive) in ASCII digits and '.', "
                    f"got {shown(raw)}",
                )
        floor = parameters.get("min_capacity", "")
        if floor:
            violations.whole_number(
                f"{path}.parameters['min_capacity']",
                floor,
                1,
                MAX_CAPACITY,
                f"must be a whole number between 1 and {MAX_CAPACITY} in ASCII digits",
            )
    elif kind in ("REROUTE_JOB", "ROUTE_TO_REVIEW"):
        first, second = (name for name, _ in ACTION_PARAMETERS[kind])
        given = [name for name in (first, second) if parameters.get(name)]
        if len(given) != 1:
            violations.add(f"{path}.parameters", f"{kind} takes exactly one of {first}, {second}")
        _region(
            violations, f"{path}.parameters['target_region']", parameters.get("target_region", "")
        )
        for name in ("target_partner_id", "partner_id", "review_queue_id"):
            if parameters.get(name):
                violations.resource_id(f"{path}.parameters[{name!r}]", parameters[name])
    elif kind == "REIMAGE_NODE":
        # Re-images go to a pinned version: an image and its digest, or neither
        # (then the node's own current version, as the node registry reports it).
        image, digest = parameters.get("image", ""), parameters.get("digest", "")
        violations.syntax(f"{path}.parameters['image']", image, IMAGE_REFERENCE, required=False)
        if digest:
            violations.syntax(f"{path}.parameters['digest']", digest, DIGEST)
            if not image:
                violations.add(f"{path}.parameters['image']", "is required with a digest")
        elif image:
            violations.add(
                f"{path}.parameters['digest']",
                "is required with an image: re-images go to a pinned digest",
            )


def parse_policy_spec(field: str, spec: pb.GovernancePolicySpec) -> ParsedPolicy:
    """The stored form of `spec`; INVALID_ARGUMENT listing every problem otherwise."""
    violations = Violations()
    _optional_id(violations, f"{field}.tenant_id", spec.tenant_id)
    trigger = ""
    if not GOVERNANCE_STATE.is_known(spec.trigger_state):
        violations.add(
            f"{field}.trigger_state",
            f"must be one of {', '.join(TRIGGER_STATES)}",
        )
    else:
        trigger = GOVERNANCE_STATE.to_name(spec.trigger_state)
        if trigger not in TRIGGER_STATES:
            violations.add(
                f"{field}.trigger_state",
                f"{trigger} drives no governance; use one of {', '.join(TRIGGER_STATES)}",
            )
            trigger = ""
    if not spec.actions:
        violations.add(f"{field}.actions", "at least one action is required")
    bounded = violations.at_most(f"{field}.actions", spec.actions, MAX_ACTIONS, "actions")
    actions: list[dict[str, Any]] = []
    kinds: set[str] = set()
    for index, action in enumerate(spec.actions if bounded else ()):
        path = f"{field}.actions[{index}]"
        if not POLICY_ACTION.is_known(action.kind):
            violations.add(
                f"{path}.kind",
                f"{action.kind} is not a policy action; known actions: "
                f"{', '.join(POLICY_ACTION.names())}",
            )
            continue
        kind = POLICY_ACTION.to_name(action.kind)
        if kind in kinds:
            violations.add(f"{path}.kind", f"{kind} is listed twice")
        kinds.add(kind)
        if trigger and kind not in ALLOWED_ACTIONS[trigger]:
            why = (
                "findings are the truth about the customer's file: they are routed, never "
                "retried or acted on automatically"
                if trigger == "COMPLETED_WITH_FINDINGS"
                else f"it does not apply to {trigger}"
            )
            violations.add(
                f"{path}.kind",
                f"{kind} is not allowed for {trigger} ({why}); allowed: "
                f"{', '.join(sorted(ALLOWED_ACTIONS[trigger]))}",
            )
        _action_parameters(violations, path, kind, dict(action.parameters))
        actions.append({"kind": kind, "parameters": dict(sorted(action.parameters.items()))})
    if {"REIMAGE_NODE", "CORDON_NODE"} <= kinds:
        violations.add(
            f"{field}.actions",
            "choose REIMAGE_NODE or CORDON_NODE, not both: node_failure_threshold cordons "
            "a node that keeps failing instead of re-imaging it again",
        )
    threshold, window = spec.node_failure_threshold, spec.node_failure_window_seconds
    violations.int_range(f"{field}.node_failure_threshold", threshold, 0, MAX_FAILURE_THRESHOLD)
    violations.int_range(f"{field}.node_failure_window_seconds", window, 0, MAX_FAILURE_WINDOW)
    if threshold > 0:
        if window <= 0:
            violations.add(
                f"{field}.node_failure_window_seconds", "is required with node_failure_threshold"
            )
        if "REIMAGE_NODE" not in kinds:
            violations.add(
                f"{field}.node_failure_threshold",
                "applies only to policies that re-image nodes (REIMAGE_NODE)",
            )
    violations.raise_if_any()
    return ParsedPolicy(
        tenant_scope=spec.tenant_id,
        trigger_state=trigger,
        actions=actions,
        enabled=spec.enabled,
        node_failure_threshold=threshold,
        node_failure_window_seconds=window,
    )
