"""A database conflict seen from a real client: the server runs the unit of work again,
answers one that outlasts its attempts ABORTED with a RetryInfo, and the client
library repeats a call that carries a request id (once in effect) and not one that
does not.

PostgreSQL only: a trigger raising serialization_failure (SQLSTATE 40001) for the
first N writes of a queue's spec makes the conflict happen on cue inside the real
server (the dispatcher's writes of what the gateway applied do not count). On
SQLite a conflict is the database locked past the busy timeout, which
tests/storage/test_conflicts.py covers."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from ppos.controlplane.client import AbortedError, Connection, RetryPolicy
from ppos.controlplane.client.config import ClientConfig, Token
from ppos.controlplane.client.governance import GovernanceClient
from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.controlplane.storage.database import RetryPolicy as ServerRetryPolicy
from tests.governance.conftest import Governed
from tests.governance.support import count, settled, snapshot
from tests.support.databases import _libpq

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)

SERVER_ATTEMPTS = ServerRetryPolicy().attempts
CONFLICT_TRIGGER = """
CREATE SEQUENCE conflict_probe;
CREATE TABLE conflict_budget (writes INTEGER NOT NULL);
INSERT INTO conflict_budget VALUES (0);
CREATE FUNCTION conflict_probe() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
  IF nextval('conflict_probe') <= (SELECT writes FROM conflict_budget) THEN
    RAISE EXCEPTION 'probe: lost to a concurrent transaction'
      USING ERRCODE = 'serialization_failure';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER conflict_probe BEFORE INSERT OR UPDATE OF capacity, state ON queues
  FOR EACH ROW EXECUTE FUNCTION conflict_probe();
"""


def _conflicts(gov: Governed, writes: int) -> None:
    """Make the next `writes` queue row writes fail as serialization failures."""
    with psycopg.connect(_libpq(gov.plane.database_url), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_class WHERE relname = 'conflict_budget'").fetchall():
            conn.execute(CONFLICT_TRIGGER)
        conn.execute("ALTER SEQUENCE conflict_probe RESTART")
        conn.execute("UPDATE conflict_budget SET writes = %s", (writes,))


def _probes(gov: Governed) -> int:
    """Queue row writes tried since the last `_conflicts`."""
    with psycopg.connect(_libpq(gov.plane.database_url), autocommit=True) as conn:
        row = conn.execute("SELECT last_value, is_called FROM conflict_probe").fetchone()
        assert row is not None
        return int(row[0]) if row[1] else 0


async def _tenant(gov: Governed) -> None:
    await gov.operator.ProvisionTenant(
        pb.ProvisionTenantRequest(
            request_id="prov-acme",
            tenant_id="acme",
            spec=res.TenantSpec(default_region="eu-west-1"),
            queues=[pb.QueueTemplate(queue_id="main", spec=res.QueueSpec(capacity=5))],
        )
    )
    await settled(gov.runtime)


def _client(gov: Governed, slept: list[float]) -> Connection:
    config = ClientConfig(
        address=gov.plane.address,
        token=Token(gov.plane.token, "test"),
        timeout=30,
        retry=RetryPolicy(max_attempts=3),
    )
    return Connection(config, sleep=slept.append)


async def test_a_call_with_a_request_id_outlasts_a_conflict(gov: Governed) -> None:
    await _tenant(gov)
    # One client attempt's worth of server attempts fails, and two more.
    _conflicts(gov, SERVER_ATTEMPTS + 2)
    slept: list[float] = []

    def create() -> res.Queue:
        with _client(gov, slept) as conn:
            queue = GovernanceClient(conn).create_queue(
                "acme", "proofs", res.QueueSpec(capacity=4), request_id="cq-proofs"
            )
            assert conn.attempts_made == 2
            return queue

    queue = await asyncio.to_thread(create)
    assert queue.meta.resource_version == "1"
    assert _probes(gov) == SERVER_ATTEMPTS + 3  # the last one wrote the row
    assert len(slept) == 1
    assert slept[0] >= 0.5  # the server's RetryInfo (DATABASE_CONFLICT) honoured
    assert count(gov.runtime, "queues", "queue_id = 'proofs'") == 1
    assert count(gov.runtime, "audit_log", "resource_id = 'acme/proofs'") == 1


async def test_a_call_without_a_request_id_is_aborted_with_retry_info(gov: Governed) -> None:
    await _tenant(gov)
    queue = (
        await gov.operator.GetQueue(pb.GetQueueRequest(tenant_id="acme", queue_id="main"))
    ).queue
    before = snapshot(gov.runtime)
    _conflicts(gov, 1000)
    slept: list[float] = []

    def resize() -> AbortedError:
        with _client(gov, slept) as conn, pytest.raises(AbortedError) as caught:
            GovernanceClient(conn).resize_queue(
                "acme",
                "main",
                9,
                reason="busy",
                expected_resource_version=queue.meta.resource_version,
            )
        return caught.value

    error = await asyncio.to_thread(resize)
    assert error.attempts == 1
    assert slept == []
    assert error.reason == "DATABASE_CONFLICT"
    assert error.retry_after is not None
    assert error.retry_after > 0
    assert error.request_id.startswith("req_")
    assert "probe" not in error.message  # the database's text stays in the server
    assert _probes(gov) == SERVER_ATTEMPTS
    _conflicts(gov, 0)
    assert snapshot(gov.runtime) == before  # nothing of the aborted call happened
