"""Policies (edit with a dry-run preview) and the reconciler's decisions.

A policy's edit is previewed first: DryRunGovernancePolicy with the edited spec lists
the decisions it would make now (the job each acts on, why, and what it would do),
storing and sending nothing; saving is a second step that carries the resource
version the operator saw, so a policy changed meanwhile is refused, not overwritten.
SetGovernancePolicy takes no reason; the plane audits the change with its actor.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.portal.plane import OperatorClients, call
from ppos.portal.sessions import Session
from ppos.portal.web import change, form_text, page, render
from ppos.preflight.v1 import job_pb2

LIMIT = 200
PREVIEW_LIMIT = 100
STATES = [n.removeprefix("GOVERNANCE_STATE_") for n in job_pb2.GovernanceState.keys()][1:]  # noqa: SIM118 - an enum wrapper


def edited_spec(current: res.GovernancePolicySpec, form: FormData) -> res.GovernancePolicySpec:
    """The policy's spec with the form's fields (the actions stay as they are)."""
    spec = res.GovernancePolicySpec()
    spec.CopyFrom(current)
    spec.enabled = form_text(form, "enabled") == "yes"
    state = form_text(form, "trigger_state", limit=64).upper()
    if state in STATES:
        spec.trigger_state = job_pb2.GovernanceState.Value("GOVERNANCE_STATE_" + state)
    for name in ("node_failure_threshold", "node_failure_window_seconds"):
        value = form_text(form, name, limit=9)
        # A value that is not a whole number is sent as -1: the plane names the field.
        setattr(spec, name, int(value) if value.isdigit() else (-1 if value else 0))
    return spec


def policy_context(
    clients: OperatorClients, policy_id: str, form: FormData | None = None
) -> dict[str, Any]:
    policy = clients.governance.get_policy(policy_id)
    spec = policy.spec if form is None else edited_spec(policy.spec, form)
    context: dict[str, Any] = {"p": policy, "spec": spec, "states": STATES, "preview": None}
    if form is not None:
        context["preview"] = clients.governance.dry_run_policy(spec=spec, limit=PREVIEW_LIMIT)
        context["version"] = form_text(form, "resource_version", limit=100)
    else:
        context["version"] = policy.meta.resource_version
    return context


@page
async def policy_page(request: Request, session: Session) -> Response:
    context = await call(policy_context, session.clients, request.path_params["policy_id"])
    context["message"] = request.query_params.get("done", "")[:100]
    return render(request, "policy.html", context, session=session)


@change
async def policy_preview(request: Request, session: Session, form: FormData) -> Response:
    policy_id = request.path_params["policy_id"]
    context = await call(policy_context, session.clients, policy_id, form)
    return render(request, "policy.html", context, session=session)


def save_policy(clients: OperatorClients, policy_id: str, form: FormData) -> None:
    policy = clients.governance.get_policy(policy_id)
    clients.governance.set_policy(
        policy_id,
        edited_spec(policy.spec, form),
        expected_resource_version=form_text(form, "resource_version", limit=100),
    )


@change
async def policy_save(request: Request, session: Session, form: FormData) -> Response:
    policy_id = request.path_params["policy_id"]
    await call(save_policy, session.clients, policy_id, form)
    return RedirectResponse(f"/governance/policies/{quote(policy_id)}?done=Saved", status_code=303)


@page
async def decisions_page(request: Request, session: Session) -> Response:
    params = request.query_params
    job, policy = params.get("job", "")[:256], params.get("policy", "")[:128]
    region, decision = params.get("region", "")[:64], params.get("decision", "")[:128]
    reply = await call(
        session.clients.governance.list_decisions,
        job_id=job,
        policy_id=policy,
        region=region,
        limit=LIMIT,
    )
    # ListDecisions has no decision id filter: one decision is picked from the listing.
    decisions = [d for d in reply.decisions if not decision or d.decision_id == decision]
    context = {
        "decisions": decisions,
        "job": job,
        "policy": policy,
        "region": region,
        "decision": decision,
        "limit": LIMIT,
    }
    return render(request, "decisions.html", context, session=session)


routes = [
    Route("/governance/policies/{policy_id}", policy_page),
    Route("/governance/policies/{policy_id}/preview", policy_preview, methods=["POST"]),
    Route("/governance/policies/{policy_id}/save", policy_save, methods=["POST"]),
    Route("/decisions", decisions_page),
]
