"""Validation of governance policy specs: which actions exist and which fit which state.

No database is needed; references to other resources are checked inside the
write transaction. Every problem is reported at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ppos.controlplane.core.validation import (
    DIGEST,
    IMAGE_REFERENCE,
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
    TRIGGER_STATES,
)
from ppos.controlplane.services.governance.models import MAX_CAPACITY

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
        _capacity_parameters(violations, path, parameters)
    elif kind in ("REROUTE_JOB", "ROUTE_TO_REVIEW"):
        _target_parameters(violations, path, kind, parameters)
    elif kind == "REIMAGE_NODE":
        _reimage_parameters(violations, path, parameters)


def _capacity_parameters(violations: Violations, path: str, parameters: dict[str, str]) -> None:
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


def _target_parameters(
    violations: Violations, path: str, kind: str, parameters: dict[str, str]
) -> None:
    first, second = (name for name, _ in ACTION_PARAMETERS[kind])
    given = [name for name in (first, second) if parameters.get(name)]
    if len(given) != 1:
        violations.add(f"{path}.parameters", f"{kind} takes exactly one of {first}, {second}")
    target_region = parameters.get("target_region", "")
    violations.region(f"{path}.parameters['target_region']", target_region, required=False)
    for name in ("target_partner_id", "partner_id", "review_queue_id"):
        if parameters.get(name):
            violations.resource_id(f"{path}.parameters[{name!r}]", parameters[name])


def _reimage_parameters(violations: Violations, path: str, parameters: dict[str, str]) -> None:
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
    if spec.tenant_id:
        violations.resource_id(f"{field}.tenant_id", spec.tenant_id)
    trigger = _trigger_state(violations, field, spec.trigger_state)
    actions, kinds = _actions(violations, field, spec, trigger)
    threshold, window = spec.node_failure_threshold, spec.node_failure_window_seconds
    _failure_limits(violations, field, threshold, window, kinds)
    violations.raise_if_any()
    return ParsedPolicy(
        tenant_scope=spec.tenant_id,
        trigger_state=trigger,
        actions=actions,
        enabled=spec.enabled,
        node_failure_threshold=threshold,
        node_failure_window_seconds=window,
    )


def _trigger_state(violations: Violations, field: str, value: int) -> str:
    """The trigger state's name ("" when it is not one that drives governance)."""
    if not GOVERNANCE_STATE.is_known(value):
        violations.add(
            f"{field}.trigger_state",
            f"must be one of {', '.join(TRIGGER_STATES)}",
        )
        return ""
    trigger = GOVERNANCE_STATE.to_name(value)
    if trigger not in TRIGGER_STATES:
        violations.add(
            f"{field}.trigger_state",
            f"{trigger} drives no governance; use one of {', '.join(TRIGGER_STATES)}",
        )
        return ""
    return trigger


def _actions(
    violations: Violations, field: str, spec: pb.GovernancePolicySpec, trigger: str
) -> tuple[list[dict[str, Any]], set[str]]:
    """The actions in stored form, and their kinds."""
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
            _not_allowed(violations, path, kind, trigger)
        _action_parameters(violations, path, kind, dict(action.parameters))
        actions.append({"kind": kind, "parameters": dict(sorted(action.parameters.items()))})
    if {"REIMAGE_NODE", "CORDON_NODE"} <= kinds:
        violations.add(
            f"{field}.actions",
            "choose REIMAGE_NODE or CORDON_NODE, not both: node_failure_threshold cordons "
            "a node that keeps failing instead of re-imaging it again",
        )
    return actions, kinds


def _not_allowed(violations: Violations, path: str, kind: str, trigger: str) -> None:
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


def _failure_limits(
    violations: Violations, field: str, threshold: int, window: int, kinds: set[str]
) -> None:
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
