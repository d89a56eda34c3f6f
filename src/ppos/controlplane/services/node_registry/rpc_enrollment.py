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

from sqlalchemy import select
from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import FailedPrecondition, InvalidArgument, Unauthenticated
from ppos.controlplane.core.ids import new_id
from ppos.controlplane.core.timeutil import duration_seconds, to_timestamp, utcnow
from ppos.controlplane.core.validation import CLUSTER_NAME, HOSTNAME, Violations
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.security.edge import ENROLLMENT_PREFIX
from ppos.controlplane.security.peers import SERVICE_AUDIENCE
from ppos.controlplane.security.principal import Principal, PrincipalKind, current_principal
from ppos.controlplane.services.node_registry.changelog import Change, record_changes
from ppos.controlplane.services.node_registry.convert import node_snapshot
from ppos.controlplane.services.node_registry.models import EnrollmentRow, NodeRow
from ppos.controlplane.services.node_registry.rpc_base import SERVICE, Context, ServicerBase
from ppos.controlplane.storage import audit

DEFAULT_ENROLLMENT_TTL = 3600.0


class EnrollmentRpcs(ServicerBase):
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
        principal = current_principal.get()

        def work(session: Session) -> EnrollmentRow:
            now = utcnow()
            existing = None
            if request.request_id:
                existing = session.scalars(
                    select(EnrollmentRow).where(EnrollmentRow.request_id == request.request_id)
                ).one_or_none()
            if existing is not None:
                if existing.region != request.region or existing.cluster != request.cluster:
                    raise InvalidArgument.single(
                        "request_id", "was used for an enrollment with another body"
                    )
                if existing.redeemed_at is not None:
                    raise FailedPrecondition(
                        f"enrollment {existing.enrollment_id} was already redeemed",
                        reason="ENROLLMENT_REDEEMED",
                    )
                existing.token_sha256 = digest  # a replay re-issues the token
                existing.expires_at = now + dt.timedelta(seconds=ttl)
                row = existing
            else:
                row = EnrollmentRow(
                    enrollment_id=new_id("enr"),
                    token_sha256=digest,
                    request_id=request.request_id or None,
                    region=request.region,
                    cluster=request.cluster,
                    labels=dict(request.labels),
                    created_by=principal.display,
                    created_at=now,
                    expires_at=now + dt.timedelta(seconds=ttl),
                )
                session.add(row)
            audit.record(
                session,
                service=SERVICE,
                resource_kind="enrollment",
                resource_id=row.enrollment_id,
                before=None,
                after={"region": row.region, "cluster": row.cluster, "expires_at": row.expires_at},
            )
            return row

        row = await self._write(work)
        return pb.CreateEnrollmentResponse(
            enrollment_id=row.enrollment_id,
            enrollment_token=token,
            expire_time=to_timestamp(row.expires_at),
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

        def work(session: Session) -> NodeRow:
            now = utcnow()
            enrollment = session.scalars(
                select(EnrollmentRow)
                .where(EnrollmentRow.token_sha256 == principal.enrollment_token_sha256)
                .with_for_update()
            ).one_or_none()
            if (
                enrollment is None
                or enrollment.redeemed_at is not None
                or enrollment.expires_at <= now
            ):
                raise Unauthenticated(
                    "enrollment token invalid, expired or already used",
                    reason="ENROLLMENT_TOKEN_INVALID",
                )
            row = NodeRow(
                node_id=new_id("node"),
                region=enrollment.region,
                cluster=enrollment.cluster,
                hostname=request.hostname,
                labels=dict(enrollment.labels),
                capacity_slots=0,
                slots_in_use=0,
                schedulable=True,
                unschedulable_reason="",
                schedulable_transition_at=now,
                readiness="NOT_READY",
                readiness_reason="Enrolled",
                last_transition_at=now,
                container_image="",
                container_digest="",
                registered=False,
                credential_generation=1,
                resource_version=0,
                generation=1,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            enrollment.redeemed_at = now
            enrollment.node_id = row.node_id
            record_changes(session, [Change(row, "Enrolled", "")], now)
            audit.record(
                session,
                service=SERVICE,
                resource_kind="node",
                resource_id=row.node_id,
                before=None,
                after=node_snapshot(row),
                actor=Principal(PrincipalKind.NODE, row.node_id),
            )
            return row

        row = await self._write(work)
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

        def work(session: Session) -> NodeRow:
            row = self._own_node(session, principal)
            before = node_snapshot(row)
            now = utcnow()
            row.credential_generation += 1  # every older credential stops working now
            record_changes(session, [Change(row, "CredentialRenewed", row.readiness)], now)
            audit.record(
                session,
                service=SERVICE,
                resource_kind="node",
                resource_id=row.node_id,
                before=before,
                after=node_snapshot(row),
            )
            return row

        row = await self._write(work)
        credential, expires = self._issue_credential(row)
        return pb.RenewNodeCredentialResponse(
            node_credential=credential,
            credential_expire_time=to_timestamp(dt.datetime.fromtimestamp(expires, dt.UTC)),
        )
