"""One fuzz campaign against a running control plane: no credential, a node's
credential, an operator's token; then the checks that span calls.

Nothing a refused request sends may change anything. Two ways to see it:
- the no-credential batch runs first, on a quiet server, between two digests of
  every table (all of it must be refused, so the digests must match);
- every call carries its own x-request-id, which the audit log records with each
  mutation: an audit entry whose request id belongs to a refused call is a change
  that call made.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import MetaData, create_engine, select, text

from ppos.controlplane.security.principal import PrincipalKind
from tests.fuzz.catalog import Method, methods
from tests.fuzz.runner import (
    CHANNEL_OPTIONS,
    Caller,
    CaseMaker,
    Failure,
    Report,
    run_cases,
)
from tests.fuzz.seeds import SeedMaker, World, build_world, harvest_page_tokens

# The fuzz world's region needs a gateway; nothing listens there (port 9, discard).
FUZZ_ENV = {"PPOS_GATEWAYS": "eu-west-1=127.0.0.1:9"}

# Tables background work of an idle plane writes to (leases, sweeps, schedules):
# left out of the digest, still covered by the audit check.
_BUSY_TABLES = frozenset({"leader_leases", "governance_leases", "alembic_version"})


def digest(url: str) -> dict[str, str]:
    """A hash of every row of every table, by table."""
    engine = create_engine(url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        found = {}
        with engine.connect() as connection:
            for table in meta.sorted_tables:
                if table.name in _BUSY_TABLES:
                    continue
                rows = sorted(repr(tuple(row)) for row in connection.execute(select(table)))
                found[table.name] = hashlib.sha256("\n".join(rows).encode()).hexdigest()
        return found
    finally:
        engine.dispose()


def audited_request_ids(url: str, prefix: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT DISTINCT request_id FROM audit_log WHERE request_id LIKE :p"),
                {"p": prefix + "%"},
            )
            return {str(row[0]) for row in rows}
    finally:
        engine.dispose()


def _pick(rng: random.Random, catalog: Sequence[Method], kind: PrincipalKind | None) -> Method:
    """Mostly methods the caller may call (deeper paths), sometimes any."""
    if kind is not None and rng.random() < 0.8:
        allowed = [m for m in catalog if kind in m.allow]
        if allowed:
            return rng.choice(allowed)
    return rng.choice(catalog)


async def health_status(channel: grpc.aio.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    return int(reply.status)


async def run_campaign(
    *,
    address: str,
    operator: Sequence[tuple[str, str]],
    database_url: str,
    requests: int,
    seed: int,
    concurrency: int = 8,
    tag: str = "db",
) -> Report:
    """`requests` fuzz calls: a quarter without a credential, a sixth as a node, the
    rest as an operator."""
    report = Report()
    rng = random.Random(seed)
    catalog = methods()
    operator_md: tuple[tuple[str, str], ...] = tuple(operator)
    channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    try:
        shares = {"none": requests // 4, "node": requests // 6}
        shares["operator"] = requests - shares["none"] - shares["node"]

        # First, on a server with nothing to do in the background: no credential.
        anyone = CaseMaker(SeedMaker(World(), rng), rng, tag)
        before = digest(database_url)
        batch = (
            anyone.case(_pick(rng, catalog, None), Caller(None, ())) for _ in range(shares["none"])
        )
        await run_cases(channel, batch, report, concurrency)
        after = digest(database_url)
        for table in sorted(set(before) | set(after)):
            if before.get(table) != after.get(table):
                report.fail(Failure("(no credential)", "-", f"table {table} changed", ""))

        world = await build_world(channel, operator_md)
        await harvest_page_tokens(channel, operator_md, world, catalog)
        cases = CaseMaker(SeedMaker(world, rng), rng, tag)
        node_md = (("authorization", f"Bearer {world.node_credential}"),)
        callers = {
            "node": Caller(PrincipalKind.NODE, node_md),
            "operator": Caller(PrincipalKind.OPERATOR, operator_md),
        }
        for name in ("node", "operator"):
            caller = callers[name]
            batch = (
                cases.case(_pick(rng, catalog, caller.kind), caller) for _ in range(shares[name])
            )
            await run_cases(channel, batch, report, concurrency)

        _check_audit(report, database_url, f"fz-{tag}-")
        status = await health_status(channel)
        if status != health_pb2.HealthCheckResponse.SERVING:
            report.fail(Failure("(health)", str(status), "not SERVING after the run", ""))
    finally:
        await channel.close()
    return report


def _check_audit(report: Report, database_url: str, prefix: str) -> None:
    for request_id in sorted(audited_request_ids(database_url, prefix)):
        answer = report.answers.get(request_id)
        if answer is None or answer.cancelled_by_us:
            continue  # a stream the fuzzer ended: its result is unknown
        if answer.code != grpc.StatusCode.OK:
            report.fail(
                Failure(
                    answer.method,
                    answer.code.name,
                    "audited a change while refused",
                    answer.details,
                )
            )
