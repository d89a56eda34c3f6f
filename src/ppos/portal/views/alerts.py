"""The alerts page: every rule, what fires now and since when."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ppos.portal.alerts import (
    ADMIN_JOB_FAILED_WINDOW_SECONDS,
    NOT_READY_ALERT_SHARE,
    OUTBOX_STUCK_SECONDS,
    QUARANTINE_WINDOW_SECONDS,
    RUNTIME_FAILURE_MIN,
    RUNTIME_FAILURE_SHARE,
    SYNC_LAG_ALERT_SECONDS,
)
from ppos.portal.sessions import Session
from ppos.portal.views.overview import current_overview
from ppos.portal.web import page, portal_of, render

RULES = [
    ("PposSyncLagHigh", f"a region's sync more than {SYNC_LAG_ALERT_SECONDS:.0f} s behind"),
    ("PposSyncRegionFailing", "a region's last sync attempt failed"),
    (
        "PposQuarantineGrowing",
        f"records quarantined in the last {QUARANTINE_WINDOW_SECONDS / 60:.0f} min",
    ),
    ("PposNodesLost", "a region has LOST nodes"),
    ("PposNodesNotReady", f"more than {NOT_READY_ALERT_SHARE:.0%} of a region's nodes not READY"),
    (
        "PposRuntimeEnvironmentFailing",
        f"more than {RUNTIME_FAILURE_SHARE:.0%} (and at least {RUNTIME_FAILURE_MIN}) of the "
        "jobs a region synced in the plane's recent window (15 min) are "
        "FAILED_RUNTIME_ENVIRONMENT",
    ),
    ("PposOutboxFailing", "outbox commands failed delivery"),
    (
        "PposOutboxStuck",
        f"an outbox command has waited more than {OUTBOX_STUCK_SECONDS / 60:.0f} min",
    ),
    (
        "PposAdminJobFailed",
        f"an admin job failed in the last {ADMIN_JOB_FAILED_WINDOW_SECONDS / 3600:.0f} h",
    ),
    (
        "PposNoSyncLeader",
        "no replica leads the sync: none ever did, or the leader's lease ran out "
        "and no replica took over",
    ),
]


@page
async def alerts_page(request: Request, session: Session) -> Response:
    portal = portal_of(request)
    data = await current_overview(portal, session)
    context = {"firing": data.alerts, "errors": data.errors, "rules": RULES}
    return render(request, "alerts.html", context, session=session)


routes = [Route("/alerts", alerts_page)]
