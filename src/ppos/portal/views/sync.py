"""Registry sync: per-region status, sweeps, the quarantine, synced jobs.

Payloads and quarantined records are shown from their exact bytes (a lexer's view,
escaped, and hex) and downloaded as those bytes; the SHA-256 shown is computed here
from what the plane sent and checked against the one the plane recorded.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ppos.controlplane.client import NotFoundError
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as pb
from ppos.portal.live import live_response
from ppos.portal.payload import view_payload
from ppos.portal.plane import OperatorClients, call
from ppos.portal.sessions import Session
from ppos.portal.web import change, form_text, page, portal_of, render

QUARANTINE_PAGE = 50


def sync_overview(clients: OperatorClients) -> dict[str, Any]:
    return {
        "statuses": clients.sync.list_statuses(),
        "sweeps": list(clients.sync.list_sweeps(limit=20).sweeps),
    }


@page
async def sync_page(request: Request, session: Session) -> Response:
    context = await call(sync_overview, session.clients)
    return render(request, "sync.html", context, session=session)


async def _sync_context(session: Session) -> dict[str, Any]:
    return await call(sync_overview, session.clients)


async def sync_events(request: Request) -> Response:
    """Read again when a region's status changes (WatchSyncStatus) or a sweep is
    started or cancelled (the audit stream)."""
    hub = portal_of(request).hub
    return live_response(
        request,
        "sync",
        "_sync_panel.html",
        "sync",
        _sync_context,
        (hub.sync, hub.audit),
        per_session=True,
    )


@change
async def start_sweep(request: Request, session: Session, form: FormData) -> Response:
    regions = [r for r in form_text(form, "regions").replace(",", " ").split() if r]
    await call(session.clients.sync.start_sweep, regions)
    return RedirectResponse("/sync", status_code=303)


@change
async def cancel_sweep(request: Request, session: Session, form: FormData) -> Response:
    await call(session.clients.sync.cancel_sweep, request.path_params["sweep_id"])
    return RedirectResponse("/sync", status_code=303)


def quarantine_page_of(
    clients: OperatorClients, region: str, token: str
) -> pb.ListQuarantinedRecordsResponse:
    return clients.sync.list_quarantine_page(
        region=region, page_size=QUARANTINE_PAGE, page_token=token
    )


@page
async def quarantine_page(request: Request, session: Session) -> Response:
    region = request.query_params.get("region", "")[:128]
    token = request.query_params.get("page_token", "")[:2048]
    reply = await call(quarantine_page_of, session.clients, region, token)
    records = [(record, view_payload(record.raw_record)) for record in reply.records]
    next_page = ""
    if reply.next_page_token:
        next_page = f"region={quote(region)}&page_token={quote(reply.next_page_token)}"
    return render(
        request,
        "quarantine.html",
        {"records": records, "region": region, "next_page": next_page},
        session=session,
    )


def find_quarantined(
    clients: OperatorClients, region: str, quarantine_id: int
) -> pb.QuarantinedRecord:
    """The record by id: the API has no GetQuarantinedRecord, so its region's pages are
    read until it is found."""
    token = ""
    while True:
        reply = quarantine_page_of(clients, region, token)
        for record in reply.records:
            if record.quarantine_id == quarantine_id:
                return record
        token = reply.next_page_token
        if not token:
            raise NotFoundError(f"quarantined record {quarantine_id} not found in {region!r}")


@page
async def quarantined_raw(request: Request, session: Session) -> Response:
    region = request.path_params["region"]
    record = await call(
        find_quarantined, session.clients, region, request.path_params["quarantine_id"]
    )
    return exact_bytes(record.raw_record, f"quarantine-{region}-{record.quarantine_id}.bin")


def exact_bytes(data: bytes, filename: str) -> Response:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in filename)
    return Response(
        data,
        media_type="application/octet-stream",
        headers={
            "content-disposition": f'attachment; filename="{safe}"',
            "x-content-sha256": hashlib.sha256(data).hexdigest(),
        },
    )


@page
async def jobs_page(request: Request, session: Session) -> Response:
    region = request.query_params.get("region", "")[:128]
    job_id = request.query_params.get("job_id", "")[:256]
    after = request.query_params.get("after", "0")
    reply = await call(
        session.clients.sync.list_jobs,
        region=region,
        job_id=job_id,
        after_sync_sequence=int(after) if after.isdigit() else 0,
        page_size=50,
        limit=50,
    )
    return render(
        request,
        "jobs.html",
        {
            "jobs": list(reply.jobs),
            "region": region,
            "job_id": job_id,
            "more": reply.last_sync_sequence if reply.has_more else 0,
        },
        session=session,
    )


def revision_of(request: Request) -> int:
    value = request.query_params.get("revision", "0")
    return int(value) if value.isdigit() else 0


@page
async def job_page(request: Request, session: Session) -> Response:
    region, job_id = request.path_params["region"], request.path_params["job_id"]
    job = await call(session.clients.sync.get_job, region, job_id, revision=revision_of(request))
    record = job.record
    view = view_payload(record.canonical_payload)
    return render(
        request,
        "job.html",
        {
            "job": job,
            "record": record,
            "view": view,
            "recorded_sha256": record.canonical_payload_sha256.hex(),
            "sha_matches": record.canonical_payload_sha256.hex() == view.sha256,
        },
        session=session,
    )


@page
async def job_payload(request: Request, session: Session) -> Response:
    region, job_id = request.path_params["region"], request.path_params["job_id"]
    job = await call(session.clients.sync.get_job, region, job_id, revision=revision_of(request))
    name = f"{job_id}-r{job.record.revision}.json"
    return exact_bytes(job.record.canonical_payload, name)


routes = [
    Route("/sync", sync_page),
    Route("/events/sync", sync_events),
    Route("/sync/sweeps", start_sweep, methods=["POST"]),
    Route("/sync/sweeps/{sweep_id}/cancel", cancel_sweep, methods=["POST"]),
    Route("/sync/quarantine", quarantine_page),
    Route("/sync/quarantine/{region}/{quarantine_id:int}/raw", quarantined_raw),
    Route("/sync/jobs", jobs_page),
    Route("/sync/jobs/{region}/{job_id}", job_page),
    Route("/sync/jobs/{region}/{job_id}/payload", job_payload),
]
