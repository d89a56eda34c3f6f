"""`pposctl sync verify` against a running plane: a synced mirror verifies; a
governance state rewritten in the database past its triggers is named; with
`--against-source`, a payload changed at the registry is named."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from ppos.controlplane.core.logging import SecretRegistry
from tests.ops.worlds import ODD_RECORDS, REGION, World, running_world
from tests.registry_sync.harness import ODD_SAMPLES, write_faults


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
    rewrite(
        database_url,
        "UPDATE synced_jobs SET governance_state = 'FAILED_RUNTIME_ENVIRONMENT' "
        "WHERE region = :r AND chain_position = :p",
        position,
    )


def rewrite(database_url: str, statement: str, position: int) -> None:
    """What someone with database access would do, past the append-only triggers."""
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            postgres = engine.dialect.name == "postgresql"
            if postgres:
                connection.exec_driver_sql("ALTER TABLE synced_jobs DISABLE TRIGGER USER")
            else:
                connection.exec_driver_sql("DROP TRIGGER synced_jobs_no_update")
            connection.execute(text(statement), {"r": REGION, "p": position, "space": b" "})
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


async def test_sync_verify_payloads_finds_a_payload_rewritten_under_its_old_digest(
    world: World, database_url: str
) -> None:
    """The chain covers each row's digest, not its bytes: `--payloads` hashes them."""
    swept = await world.ctl("sync", "sweep", "start", REGION, "--poll", "50ms")
    assert swept.code == 0, swept.stderr
    appended = "UPDATE synced_jobs SET canonical_payload = canonical_payload || :space"
    rewrite(database_url, appended + " WHERE region = :r AND chain_position = :p", 3)
    chain_only = await world.ctl("sync", "verify", REGION)
    assert chain_only.code == 0, chain_only.stderr
    caught = await world.ctl("sync", "verify", REGION, "--payloads")
    assert caught.code == 14, caught.stderr
    assert caught.lines()[1].split()[:2] == [REGION, "CHANGED"]
    assert "synced_jobs position 3" in caught.stderr
    assert "fields: canonical_payload" in caught.stderr


async def test_sync_verify_against_source_names_a_payload_changed_at_the_registry(
    database_url: str, tmp_path: Path, canary_token: str, secret_registry: SecretRegistry
) -> None:
    faults = tmp_path / "faults.json"
    write_faults(faults, {"conflict_at": [3]})
    options = {"records": [ODD_SAMPLES], "extra": ["--faults", str(faults)]}
    async for world in running_world(
        database_url, tmp_path, canary_token, secret_registry, sim_options=options
    ):
        await world.synced()
        clean = await world.ctl("sync", "verify", "--against-source")
        assert clean.code == 0, clean.stderr
        header = clean.lines()[0].split()
        assert header[:4] == ["REGION", "RESULT", "SOURCE", "COMPARED"]
        assert clean.lines()[1].split()[:4] == [REGION, "verified", "matches", str(ODD_RECORDS)]
        conflict = world.sim.registry.feed.record(3)
        assert f"conflict {conflict.job_id}@{conflict.revision}" in clean.stderr
        assert "the source holds both payloads still" in clean.stderr

        write_faults(faults, {"changed_at": [3, 5]})
        changed = world.sim.registry.feed.record(5)
        caught = await world.ctl("sync", "verify", REGION, "--against-source")
        assert caught.code == 14, caught.stderr
        assert caught.lines()[1].split()[:5] == [REGION, "verified", "DIVERGES", "13", "2"]
        assert f"source: CHANGED {changed.job_id}@{changed.revision}" in caught.stderr
        assert "the source holds the quarantined payload" in caught.stderr
        bounded = await world.ctl(
            "-o", "json", "sync", "verify", REGION, "--against-source", "--max-divergences", "1"
        )
        (verification,) = bounded.json()["verifications"]
        assert verification["source"]["state"] == "SOURCE_CHECK_STATE_DIVERGES"
        assert len(verification["source"]["divergences"]) == 1
        assert verification["source"]["changed"] == "2"  # int64 in proto JSON

        await world.sim.stop(0)
        gone = await world.ctl("sync", "verify", "--against-source")
        assert gone.code == 3, gone.stderr
        assert f"error: {REGION}: source UNAVAILABLE: the {REGION} registry at" in gone.stderr
