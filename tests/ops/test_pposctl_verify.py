"""`pposctl sync verify` against a running plane: a synced mirror verifies; a
governance state rewritten in the database past its triggers is named."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from ppos.controlplane.core.logging import SecretRegistry
from tests.ops.worlds import ODD_RECORDS, REGION, World, running_world
from tests.registry_sync.harness import ODD_SAMPLES


@pytest.fixture
async def world(
    database_url: str, tmp_path: Path, canary_token: str, secret_registry: SecretRegistry
) -> AsyncIterator[World]:
    async for made in running_world(
        database_url,
        tmp_path,
        canary_token,
        secret_registry,
        sim_options={"records": [ODD_SAMPLES]},
    ):
        yield made


def rewrite_governance_state(database_url: str, position: int) -> None:
    """What someone with database access would do, past the append-only triggers."""
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            postgres = engine.dialect.name == "postgresql"
            if postgres:
                connection.exec_driver_sql("ALTER TABLE synced_jobs DISABLE TRIGGER USER")
            else:
                connection.exec_driver_sql("DROP TRIGGER synced_jobs_no_update")
            connection.execute(
                text(
                    "UPDATE synced_jobs SET governance_state = 'FAILED_RUNTIME_ENVIRONMENT' "
                    "WHERE region = :r AND chain_position = :p"
                ),
                {"r": REGION, "p": position},
            )
            if postgres:
                connection.exec_driver_sql("ALTER TABLE synced_jobs ENABLE TRIGGER USER")
    finally:
        engine.dispose()


async def test_sync_verify_says_verified_then_names_a_rewritten_field(
    world: World, database_url: str
) -> None:
    swept = await world.ctl("sync", "sweep", "start", REGION, "--poll", "50ms")
    assert swept.code == 0, swept.stderr
    clean = await world.ctl("sync", "verify")
    assert clean.code == 0, clean.stderr
    assert clean.lines()[0].split()[:3] == ["REGION", "RESULT", "RECORDS"]
    assert clean.lines()[1].split()[:3] == [REGION, "verified", str(ODD_RECORDS)]

    rewrite_governance_state(database_url, 2)
    caught = await world.ctl("sync", "verify", REGION)
    assert caught.code == 14, caught.stderr
    assert caught.lines()[1].split()[:2] == [REGION, "CHANGED"]
    assert "synced_jobs position 2" in caught.stderr
    assert "fields: governance_state" in caught.stderr
    as_json = await world.ctl("-o", "json", "sync", "verify", REGION)
    (verification,) = as_json.json()["verifications"]
    assert verification["divergence"]["kind"] == "DIVERGENCE_KIND_CHANGED"
    assert verification["divergence"]["fields"] == ["governance_state"]
    unknown = await world.ctl("sync", "verify", "mars-north-1")
    assert unknown.code == 9, unknown.stderr
