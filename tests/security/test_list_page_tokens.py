"""Every List RPC that pages with tokens, on a real server: hostile, altered, foreign
and stale tokens answer INVALID_ARGUMENT on page_token, and a walk page by page
returns every row exactly once.

The lists are found from the service descriptors (every method whose request
has a `page_token`), so a new list is covered, or fails here until it is seeded.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from sqlalchemy.orm import Session

from ppos.controlplane.core.ids import new_id
from ppos.controlplane.core.logging import SecretRegistry
from ppos.controlplane.core.pagination import STALE, TOKEN_LIFETIME, Ident, Listing, PageTokens
from ppos.controlplane.governance.v1 import governance_service_pb2 as gov_pb
from ppos.controlplane.governance.v1 import governance_service_pb2_grpc as gov_grpc
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as nr_pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as nr_grpc
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as rs_pb
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2_grpc as rs_grpc
from ppos.controlplane.security.keys import KeyRing
from ppos.controlplane.security.page_keys import RingPageKeys
from ppos.controlplane.services.governance import models as gov
from ppos.controlplane.services.node_registry import models as nr
from ppos.controlplane.services.registry_sync import models as rs
from tests.governance.support import details
from tests.support.page_tokens import HOSTILE, random_tokens
from tests.support.servers import RunningPlane, start_plane, stop_plane

ROWS = 7  # of each list, walked 2 at a time: 4 pages
PAGE = 2
SERVICES = [
    (gov_pb.DESCRIPTOR.services_by_name["GovernanceService"], gov_grpc.GovernanceServiceStub),
    (nr_pb.DESCRIPTOR.services_by_name["NodeRegistryService"], nr_grpc.NodeRegistryServiceStub),
    (rs_pb.DESCRIPTOR.services_by_name["RegistrySyncService"], rs_grpc.RegistrySyncServiceStub),
]


@dataclass(frozen=True)
class TokenList:
    method: MethodDescriptor
    stub: type

    @property
    def name(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    def call(self, plane: RunningPlane) -> Callable[..., Any]:
        return getattr(self.stub(plane.channel), self.method.name)  # type: ignore[no-any-return]

    def request(self, token: str, size: int = PAGE) -> Message:
        return GetMessageClass(self.method.input_type)(page_token=token, page_size=size)

    def rows_field(self) -> str:
        [field] = [f for f in self.method.output_type.fields if f.is_repeated]
        return field.name

    def keys(self, reply: Any) -> list[tuple[str, ...]]:
        """Identity of each row of a page (queues are named by tenant and queue)."""
        found = []
        for row in getattr(reply, self.rows_field()):
            first = row.DESCRIPTOR.fields[0].name
            key = (str(getattr(row, first)),)
            if "queue_id" in row.DESCRIPTOR.fields_by_name and first == "tenant_id":
                key += (row.queue_id,)
            found.append(key)
        return found


def token_lists() -> list[TokenList]:
    return [
        TokenList(method, stub)
        for service, stub in SERVICES
        for method in service.methods
        if "page_token" in method.input_type.fields_by_name
    ]


LISTS = token_lists()


def test_every_paged_list_is_covered() -> None:
    """The 13 lists that page with tokens today (a new one joins them here)."""
    assert len(LISTS) == 13
    assert {t.rows_field() for t in LISTS} >= {"tenants", "queues", "nodes", "records"}


def _seed(session: Session) -> None:
    """ROWS rows of every list; newest-first lists get pairs of equal timestamps."""
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for i in range(ROWS):
        at = base + dt.timedelta(seconds=i // 2)  # ties: the id breaks them
        tenant = f"tenant-{i}"
        session.add(gov.TenantRow(tenant_id=tenant, phase="ACTIVE", created_at=at, updated_at=at))
        session.add(
            gov.PartnerRow(
                partner_id=f"partner-{i}", region="eu-west-1", created_at=at, updated_at=at
            )
        )
        session.flush()
        session.add(
            gov.QueueRow(
                tenant_id="tenant-0" if i % 2 else tenant,
                queue_id=f"queue-{i}",
                region="eu-west-1",
                capacity=1,
                state="ACTIVE",
                created_at=at,
                updated_at=at,
            )
        )
        session.add(
            gov.PartnerRouteRow(
                route_id=f"route-{i}",
                tenant_id=tenant,
                partner_id=f"partner-{i}",
                created_at=at,
                updated_at=at,
            )
        )
        session.add(
            gov.PolicyRow(
                policy_id=f"policy-{i}",
                tenant_scope=tenant,  # one policy per scope and trigger
                trigger_state="DEGRADED",
                actions=[],
                created_at=at,
                updated_at=at,
            )
        )
        decision = f"dec_{i:026d}"
        session.add(
            gov.DecisionRow(
                decision_id=decision,
                region="eu-west-1",
                job_id=f"job-{i}",
                revision=1,
                policy_id=f"policy-{i}",
                policy_generation=1,
                governance_state="DEGRADED",
                payload_sha256=b"\x00" * 32,
                sync_sequence=i + 1,
                record_time=at,
                actions=[],
                rationale="seeded",
                created_at=at,
            )
        )
        session.flush()
        session.add(
            gov.OutboxRow(
                command_id=f"cmd_{i:026d}",
                idempotency_key=f"key-{i}",
                target="eu-west-1",
                method="/test.v1.Nothing/Nothing",
                request_payload=b"",
                request_json="{}",
                state="ACKNOWLEDGED",  # done: the dispatcher leaves it alone
                issued_by_kind="operator",
                issued_by_name="seed",
                next_attempt_at=at,
                decision_id=decision,
                created_at=at,
                updated_at=at,
            )
        )
        session.add(
            gov.AdminJobRow(
                admin_job_id=f"job_{i:026d}",
                kind="HEALTH_SWEEP",
                parameters={},
                state="SUCCEEDED",
                started_by_kind="operator",
                started_by_name="seed",
                created_at=at,
                updated_at=at,
            )
        )
        sweep = new_id("swp")
        session.add(
            rs.SweepRow(
                sweep_id=sweep,
                regions=["eu-west-1"],
                state="SUCCEEDED",
                started_by="seed",
                created_at=at,
            )
        )
        session.add(
            rs.QuarantinedRecordRow(
                region="eu-west-1",
                job_id=f"job-{i}",
                revision=1,
                reason="BAD_DIGEST",
                detail="seeded",
                raw_record=b"raw",
                raw_record_sha256=b"\x00" * 32,
                source_cursor="c",
                sweep_id=sweep,
                quarantined_at=at,
            )
        )
        node = new_id("node")
        session.add(
            nr.NodeRow(
                node_id=node,
                region="eu-west-1",
                readiness="NOT_READY",
                last_transition_at=at,
                created_at=at,
                updated_at=at,
            )
        )
        session.add(
            nr.NodeCommandRow(
                command_id=new_id("cmd"),
                node_id=node,
                kind="REIMAGE",
                state="SUCCEEDED",
                reason="seeded",
                issued_by_kind="operator",
                issued_by_name="seed",
                request_sha256="0" * 64,
                timeout_seconds=600,
                deadline=at,
                created_at=at,
                updated_at=at,
            )
        )
        session.add(
            nr.EnrollmentRow(
                enrollment_id=new_id("enr"),
                token_sha256=f"{i:064x}",
                region="eu-west-1",
                created_by="operator:seed",
                created_at=at,
                expires_at=at + dt.timedelta(days=1),
            )
        )


async def _walk(plane: RunningPlane, listing: TokenList) -> list[tuple[str, ...]]:
    seen: list[tuple[str, ...]] = []
    token = ""
    for _ in range(100):
        reply = await listing.call(plane)(listing.request(token), metadata=plane.operator)
        assert len(getattr(reply, listing.rows_field())) <= PAGE
        seen += listing.keys(reply)
        token = reply.next_page_token
        if not token:
            return seen
    raise AssertionError(f"{listing.name}: no last page after 100 pages")


async def _refusal(plane: RunningPlane, listing: TokenList, token: str) -> dict[str, Any]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await listing.call(plane)(listing.request(token), metadata=plane.operator)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (listing.name, token[:40], error)
    found = details(error)
    assert list(found["fields"]) == ["page_token"], (listing.name, found)
    return found


async def test_every_list_walks_each_row_once_and_refuses_hostile_tokens(
    plane: RunningPlane, tmp_path: Path
) -> None:
    await plane.runtime.db.write(_seed)
    first_tokens: dict[str, str] = {}
    for listing in LISTS:
        everything = await listing.call(plane)(listing.request("", 1000), metadata=plane.operator)
        assert not everything.next_page_token
        expected = listing.keys(everything)
        assert len(expected) >= ROWS, listing.name
        walked = await _walk(plane, listing)
        assert sorted(walked) == sorted(expected), listing.name
        assert len(set(walked)) == len(walked), f"{listing.name}: a row served twice"
        first = await listing.call(plane)(listing.request(""), metadata=plane.operator)
        first_tokens[listing.name] = first.next_page_token

    elsewhere = PageTokens(RingPageKeys(KeyRing.from_directory(tmp_path / "elsewhere")))
    expired = PageTokens(
        RingPageKeys(plane.runtime.keyring), clock=lambda: time.time() - 2 * TOKEN_LIFETIME
    )
    hostile = HOSTILE + random_tokens(18, 20)
    names = [listing.name for listing in LISTS]
    for index, listing in enumerate(LISTS):
        for token in hostile:
            await _refusal(plane, listing, token)
        own = first_tokens[listing.name]
        other = first_tokens[names[(index + 1) % len(names)]]
        found = await _refusal(plane, listing, other)
        assert "another list" in found["fields"]["page_token"]
        for at in (len(own) // 2, len(own) - 3):
            altered = own[:at] + ("A" if own[at] != "A" else "B") + own[at + 1 :]
            await _refusal(plane, listing, altered)
        probe = Listing(listing.name, Ident("id"))
        for stale in (elsewhere.issue(probe, {}, ("x",)), expired.issue(probe, {}, ("x",))):
            found = await _refusal(plane, listing, stale)
            assert found["fields"]["page_token"] == STALE
            assert found["reason"] == "PAGE_TOKEN_EXPIRED"
        assert await _walk(plane, listing), "the list still serves after the refusals"


async def test_replicas_sharing_the_signing_key_continue_each_others_walks(
    database_url: str, tmp_path: Path, canary_token: str, secret_registry: SecretRegistry
) -> None:
    """Two servers on one database with one PPOS_SIGNING_KEY_FILE (as compose and
    Kubernetes run them): a walk alternating between them sees every row once; a
    server under another key refuses their tokens as stale."""
    shared = KeyRing.from_directory(tmp_path / "shared-keys").active.kid
    key_file = {"PPOS_SIGNING_KEY_FILE": str(tmp_path / "shared-keys" / f"{shared}.pem")}
    planes = [
        await start_plane(
            token=canary_token,
            database_url=database_url,
            data_dir=tmp_path / name,
            secrets=secret_registry,
            extra_env=env,
        )
        for name, env in (("one", key_file), ("two", key_file), ("other", {}))
    ]
    try:
        one, two, other = planes
        await one.runtime.db.write(_seed)
        tenants = next(t for t in LISTS if t.method.name == "ListTenants")
        everything = await tenants.call(one)(tenants.request("", 1000), metadata=one.operator)
        seen: list[tuple[str, ...]] = []
        token, last, turn = "", "", 0
        while True:
            plane = (one, two)[turn % 2]
            reply = await tenants.call(plane)(tenants.request(token), metadata=plane.operator)
            seen += tenants.keys(reply)
            token, turn = reply.next_page_token, turn + 1
            if not token:
                break
            last = token
        assert turn >= 3, "the walk crossed replicas"
        assert sorted(seen) == sorted(tenants.keys(everything))
        found = await _refusal(other, tenants, last)
        assert found["fields"]["page_token"] == STALE
    finally:
        for plane in planes:
            await stop_plane(plane)
