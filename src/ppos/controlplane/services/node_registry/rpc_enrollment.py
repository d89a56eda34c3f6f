"""Enrollment and node credentials.

Operators approve an enrollment and hand the one-time token to the node; the
node redeems it for a node-scoped credential (a JWT bound to its id and a
credential generation) and from then on can call only node RPCs, only for
itself. Bumping the generation revokes every older credential at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from ppos.controlplane.core.errors import Unauthenticated
from ppos.controlplane.core.pagination import Ident, Listing, page_size
from ppos.controlplane.core.timeutil import duration_seconds, to_timestamp, utcnow
from ppos.controlplane.core.validation import CLUSTER_NAME, HOSTNAME, MAX_ENUM_FILTER, Violations
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.security.authentication import ENROLLMENT_PREFIX
from ppos.controlplane.security.peers import SERVICE_AUDIENCE
from ppos.controlplane.security.principal import PrincipalKind, current_principal
from ppos.controlplane.services.node_registry import store
from ppos.controlplane.services.node_registry.convert import (
    ENROLLMENT_STATE_NAME,
    enrollment_to_proto,
)
from ppos.controlplane.services.node_registry.deps import NodeRegistryDeps
from ppos.controlplane.services.node_registry.enrollment import (
    EnrollmentSpec,
    create_enrollment,
    enrollment_state,
    redeem_enrollment,
    renew_credential,
    revoke_enrollment,
)
from ppos.controlplane.services.node_registry.models import NodeRow
from ppos.controlplane.services.node_registry.rpc_base import SERVICE, Context
from ppos.controlplane.services.node_registry.unit_of_work import NodeWrites

DEFAULT_ENROLLMENT_TTL = 3600.0
ENROLLMENTS_PAGE = Listing(
    "/ppos.controlplane.noderegistry.v1.NodeRegistryService/ListEnrollments",
    Ident("enrollment_id"),
)


class EnrollmentRpcs:
    def __init__(self, deps: NodeRegistryDeps, write: NodeWrites) -> None:
        self._deps = deps
        self._settings = deps.settings
        self._write = write

    def _issue_credential(self, row: NodeRow) -> tuple[str, int]:
        return self._deps.minter.mint_node_credential(
            node_id=row.node_id,
            generation=row.credential_generation,
            audience=SERVICE_AUDIENCE[SERVICE],
            ttl_seconds=self._deps.node_credential_ttl,
        )

    async def CreateEnrollment(
        self, request: pb.CreateEnrollmentRequest, context: Context
    ) -> pb.CreateEnrollmentResponse:
        violations = Violations()
        violations.region("region", request.region)
        violations.syntax("cluster", request.cluster, CLUSTER_NAME, required=False)
        violations.labels("labels", request.labels)
        ttl = duration_seconds(request.ttl) if request.HasField("ttl") else DEFAULT_ENROLLMENT_TTL
        if not 60 <= ttl <= self._settings.enrollment_ttl_max:
            violations.add("ttl", f"must be between 60s and {self._settings.enrollment_ttl_max:g}s")
        violations.object_id("request_id", request.request_id, required=False)
        violations.raise_if_any()
        token = ENROLLMENT_PREFIX + secrets.token_urlsafe(32)
        digest = hashlib.sha256(token.encode()).hexdigest()
        spec = EnrollmentSpec(
            region=request.region,
            cluster=request.cluster,
            labels=dict(request.labels),
            ttl_seconds=ttl,
            request_id=request.request_id,
        )
        created_by = current_principal.get().display
        row = await self._write(lambda s: create_enrollment(s, spec, digest, created_by, utcnow()))
        return pb.CreateEnrollmentResponse(
            enrollment_id=row.enrollment_id,
            enrollment_token=token,
            expire_time=to_timestamp(row.expires_at),
        )

    async def ListEnrollments(
        self, request: pb.ListEnrollmentsRequest, context: Context
    ) -> pb.ListEnrollmentsResponse:
        violations = Violations()
        violations.region("region", request.region, required=False)
        states: set[str] = set()
        bounded = violations.at_most("states", request.states, MAX_ENUM_FILTER)
        for index, value in enumerate(request.states if bounded else ()):
            name = ENROLLMENT_STATE_NAME.get(value)
            if name is None:
                violations.add(f"states[{index}]", f"is not an enrollment state ({value})")
            else:
                states.add(name)
        violations.raise_if_any()
        size = page_size(request.page_size)
        wanted = sorted(states)
        filters = {"region": request.region, "states": wanted}
        position = self._deps.page_tokens.read(ENROLLMENTS_PAGE, filters, request.page_token)
        before: str = position[0] if position else ""

        region, now = request.region, utcnow()
        rows = await self._deps.db.read(
            lambda s: store.list_enrollments(s, region, wanted, now, before, size)
        )
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = self._deps.page_tokens.issue(
                ENROLLMENTS_PAGE, filters, (rows[-1].enrollment_id,)
            )
        return pb.ListEnrollmentsResponse(
            enrollments=[enrollment_to_proto(row, enrollment_state(row, now)) for row in rows],
            next_page_token=token,
        )

    async def RevokeEnrollment(
        self, request: pb.RevokeEnrollmentRequest, context: Context
    ) -> pb.RevokeEnrollmentResponse:
        violations = Violations()
        violations.object_id("enrollment_id", request.enrollment_id)
        violations.reason("reason", request.reason)
        violations.raise_if_any()

        enrollment_id, reason = request.enrollment_id, request.reason
        actor = current_principal.get()
        now = utcnow()
        row = await self._write(lambda s: revoke_enrollment(s, enrollment_id, reason, actor, now))
        return pb.RevokeEnrollmentResponse(
            enrollment=enrollment_to_proto(row, enrollment_state(row, now))
        )

    async def EnrollNode(
        self, request: pb.EnrollNodeRequest, context: Context
    ) -> pb.EnrollNodeResponse:
        principal = current_principal.get()
        if principal.kind is not PrincipalKind.ENROLLING_NODE:
            raise Unauthenticated("enrollment token required", reason="MISSING_CREDENTIAL")
        violations = Violations()
        violations.syntax("hostname", request.hostname, HOSTNAME, required=False)
        violations.raise_if_any()

        token_sha256, hostname = principal.enrollment_token_sha256, request.hostname
        row = await self._write(lambda s: redeem_enrollment(s, token_sha256, hostname, utcnow()))
        credential, expires = self._issue_credential(row)
        return pb.EnrollNodeResponse(
            node_id=row.node_id,
            node_credential=credential,
            credential_expire_time=to_timestamp(dt.datetime.fromtimestamp(expires, dt.UTC)),
        )

    async def RenewNodeCredential(
        self, request: pb.RenewNodeCredentialRequest, context: Context
    ) -> pb.RenewNodeCredentialResponse:
        principal = current_principal.get()

        row = await self._write(lambda s: renew_credential(s, principal, utcnow()))
        credential, expires = self._issue_credential(row)
        return pb.RenewNodeCredentialResponse(
            node_credential=credential,
            credential_expire_time=to_timestamp(dt.datetime.fromtimestamp(expires, dt.UTC)),
        )
