"""Named operators' credentials: issued by the command line, looked up once per
cache period, revoked and rotated on every replica within the documented
delay, refused when pasted into a request."""

from __future__ import annotations

import asyncio
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import event

from ppos.controlplane.core.logging import SecretRegistry
from ppos.controlplane.governance.v1 import governance_service_pb2 as gpb
from ppos.controlplane.governance.v1 import governance_service_pb2_grpc as gpb_grpc
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as pb_grpc
from ppos.controlplane.security.operators import REVOCATION_DELAY
from tests.security.test_operator_roles import reason_of
from tests.support.operators import NamedOperator, add_operator, revoke_operator, rotate_operator
from tests.support.processes import run_cli
from tests.support.servers import RunningPlane, start_plane, stop_plane


async def _list_nodes(
    plane: RunningPlane, metadata: tuple[tuple[str, str], ...]
) -> grpc.StatusCode:
    stub = pb_grpc.NodeRegistryServiceStub(plane.channel)
    try:
        await stub.ListNodes(pb.ListNodesRequest(), metadata=metadata, timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def _refused_within_the_delay(plane: RunningPlane, operator: NamedOperator) -> float:
    """Seconds until `operator`'s calls are refused (failing past the delay)."""
    started = time.monotonic()
    while await _list_nodes(plane, operator.metadata) == grpc.StatusCode.OK:
        assert time.monotonic() - started < REVOCATION_DELAY + 2, "still admitted"
        await asyncio.sleep(0.2)
    return time.monotonic() - started


@pytest.fixture
async def second_replica(
    plane: RunningPlane, tmp_path: Path, canary_token: str, secret_registry: SecretRegistry
) -> AsyncIterator[RunningPlane]:
    """Another replica on the same database."""
    other = await start_plane(
        token=canary_token,
        database_url=plane.database_url,
        data_dir=tmp_path / "replica-2",
        secrets=secret_registry,
    )
    try:
        yield other
    finally:
        await stop_plane(other)


async def test_a_revoke_is_seen_by_every_replica_within_the_delay(
    plane: RunningPlane, second_replica: RunningPlane
) -> None:
    alice = await add_operator(plane, "alice", "viewer")
    for replica in (plane, second_replica):  # both have her in their caches now
        assert await _list_nodes(replica, alice.metadata) == grpc.StatusCode.OK
    await revoke_operator(plane, alice)
    for replica in (plane, second_replica):
        await _refused_within_the_delay(replica, alice)
        assert await _list_nodes(replica, alice.metadata) == grpc.StatusCode.UNAUTHENTICATED


async def test_rotate_replaces_the_credential(plane: RunningPlane) -> None:
    old = await add_operator(plane, "bob", "operator")
    assert await _list_nodes(plane, old.metadata) == grpc.StatusCode.OK
    new = await rotate_operator(plane, old)
    assert await _list_nodes(plane, new.metadata) == grpc.StatusCode.OK  # at once
    await _refused_within_the_delay(plane, old)
    assert await _list_nodes(plane, new.metadata) == grpc.StatusCode.OK


async def test_an_unknown_operator_credential_is_unauthenticated(plane: RunningPlane) -> None:
    stub = pb_grpc.NodeRegistryServiceStub(plane.channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListNodes(
            pb.ListNodesRequest(), metadata=(("authorization", "Bearer ppos_op_" + "x" * 43),)
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(caught.value)[0] == "UNKNOWN_CREDENTIAL"


async def test_calls_do_not_read_the_database_for_a_cached_credential(plane: RunningPlane) -> None:
    carol = await add_operator(plane, "carol", "viewer")
    lookups: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "FROM operators" in statement:
            lookups.append(statement)

    db = plane.runtime.db
    engines = {id(db.read_engine): db.read_engine, id(db.write_engine): db.write_engine}
    for engine in engines.values():
        event.listen(engine, "before_cursor_execute", count)
    try:
        calls = [_list_nodes(plane, carol.metadata) for _ in range(40)]
        assert set(await asyncio.gather(*calls)) == {grpc.StatusCode.OK}
    finally:
        for engine in engines.values():
            event.remove(engine, "before_cursor_execute", count)
    assert len(lookups) == 1, "one lookup for 40 concurrent calls in one cache period"


async def test_a_pasted_operator_credential_is_refused_and_not_stored(
    plane: RunningPlane,
) -> None:
    dave = await add_operator(plane, "dave", "admin")
    stub = gpb_grpc.GovernanceServiceStub(plane.channel)
    for metadata, display_name in (
        (plane.operator, f"shop {dave.credential}"),
        ((*plane.operator, ("x-operator", dave.credential)), "Shop"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreatePartner(
                gpb.CreatePartnerRequest(
                    partner_id="shop-1", display_name=display_name, region="eu-west-1"
                ),
                metadata=metadata,
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert reason_of(caught.value)[0] == "CREDENTIAL_IN_REQUEST"
        assert dave.credential not in (caught.value.details() or "")
    listed = await stub.ListPartners(gpb.ListPartnersRequest(), metadata=plane.operator)
    assert list(listed.partners) == []


async def test_the_command_line_adds_lists_rotates_and_revokes(
    plane: RunningPlane, tmp_path: Path
) -> None:
    env = {"PPOS_DATABASE_URL": plane.database_url}
    out = tmp_path / "erin.credential"
    added = await asyncio.to_thread(
        run_cli, "operators", "add", "erin", "--role", "viewer", "--out", str(out), env=env
    )
    assert added.returncode == 0, added.stderr
    assert added.stdout == ""  # the credential went to the file only
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    erin = NamedOperator("erin", "viewer", out.read_text().strip())
    assert erin.credential.startswith("ppos_op_")
    assert await _list_nodes(plane, erin.metadata) == grpc.StatusCode.OK
    enroll = pb_grpc.NodeRegistryServiceStub(plane.channel).CreateEnrollment
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await enroll(pb.CreateEnrollmentRequest(region="eu-west-1"), metadata=erin.metadata)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    reason, info = reason_of(caught.value)
    assert (reason, info["required_role"], info["role"]) == ("ROLE_REQUIRED", "operator", "viewer")

    listed = await asyncio.to_thread(run_cli, "operators", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split()[:3] == ["erin", "viewer", "active"]
    assert erin.credential not in listed.stdout

    rotated = await asyncio.to_thread(run_cli, "operators", "rotate", "erin", env=env)
    assert rotated.returncode == 0, rotated.stderr
    new = NamedOperator("erin", "viewer", rotated.stdout.strip())
    assert new.credential.startswith("ppos_op_")
    assert new.credential != erin.credential
    assert await _list_nodes(plane, new.metadata) == grpc.StatusCode.OK
    await _refused_within_the_delay(plane, erin)

    revoked = await asyncio.to_thread(run_cli, "operators", "revoke", "erin", env=env)
    assert revoked.returncode == 0, revoked.stderr
    await _refused_within_the_delay(plane, new)
    listed = await asyncio.to_thread(run_cli, "operators", "list", env=env)
    assert listed.stdout.splitlines()[1].split()[:3] == ["erin", "viewer", "revoked"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("add", "frank"), "--role viewer|operator|admin is required"),
        (("add", "Frank", "--role", "admin"), "operator name 'Frank'"),
        (("add", "break-glass", "--role", "admin"), "names the control token"),
        (("rotate", "nobody"), "no operator named nobody"),
        (("revoke",), "give the operator's NAME"),
    ],
)
def test_the_command_line_refuses_in_one_line(
    database_url: str, argv: tuple[str, ...], message: str
) -> None:
    result = run_cli("operators", *argv, env={"PPOS_DATABASE_URL": database_url})
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_the_command_line_leaves_the_schema_to_migrate(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    result = run_cli("operators", "list", env={"PPOS_DATABASE_URL": url})
    assert result.returncode == 2
    assert "run `ppos-control-plane migrate`" in result.stderr
