"""Rows as the audit log records them, before and after a change (never a credential)."""

from __future__ import annotations

import json
from typing import Any

from ppos.controlplane.services.governance.models import (
    AdminJobRow,
    OutboxRow,
    PartnerRouteRow,
    PartnerRow,
    PolicyRow,
    QueueRow,
    TenantRow,
)


def tenant_snapshot(row: TenantRow) -> dict[str, Any]:
    return {
        "tenant_id": row.tenant_id,
        "display_name": row.display_name,
        "default_region": row.default_region,
        "default_partner_id": row.default_partner_id or "",
        "labels": dict(row.labels),
        "phase": row.phase,
        "reason": row.reason,
        "resource_version": row.resource_version,
        "generation": row.generation,
    }


def queue_snapshot(row: QueueRow) -> dict[str, Any]:
    return {
        "tenant_id": row.tenant_id,
        "queue_id": row.queue_id,
        "region": row.region,
        "capacity": row.capacity,
        "state": row.state,
        "reason": row.reason,
        "priority": row.priority,
        "resource_version": row.resource_version,
        "generation": row.generation,
    }


def partner_snapshot(row: PartnerRow) -> dict[str, Any]:
    return {
        "partner_id": row.partner_id,
        "display_name": row.display_name,
        "region": row.region,
        "accepts_review": row.accepts_review,
        "resource_version": row.resource_version,
    }


def route_snapshot(row: PartnerRouteRow) -> dict[str, Any]:
    return {
        "route_id": row.route_id,
        "tenant_id": row.tenant_id,
        "queue_id": row.queue_id,
        "partner_id": row.partner_id,
        "fallback_partner_id": row.fallback_partner_id or "",
        "priority": row.priority,
        "condition_states": list(row.condition_states),
        "condition_source_region": row.condition_source_region,
        "resource_version": row.resource_version,
        "generation": row.generation,
    }


def policy_snapshot(row: PolicyRow) -> dict[str, Any]:
    return {
        "policy_id": row.policy_id,
        "tenant_id": row.tenant_scope,
        "trigger_state": row.trigger_state,
        "actions": json.loads(json.dumps(row.actions)),
        "enabled": row.enabled,
        "node_failure_threshold": row.node_failure_threshold,
        "node_failure_window_seconds": row.node_failure_window_seconds,
        "resource_version": row.resource_version,
        "generation": row.generation,
    }


def command_snapshot(row: OutboxRow) -> dict[str, Any]:
    return {
        "command_id": row.command_id,
        "idempotency_key": row.idempotency_key,
        "target": row.target,
        "method": row.method,
        "subject": row.subject,
        "state": row.state,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "decision_id": row.decision_id or "",
    }


def admin_job_snapshot(row: AdminJobRow) -> dict[str, Any]:
    return {
        "admin_job_id": row.admin_job_id,
        "kind": row.kind,
        "parameters": dict(row.parameters),
        "state": row.state,
        "progress_done": row.progress_done,
        "progress_total": row.progress_total,
        "checkpoint": row.checkpoint,
        "cancel_reason": row.cancel_reason,
        "error": row.error,
        # What a finished job found (a mirror verification's outcome, say) stays in the audit.
        "result_json": row.result_json,
    }
