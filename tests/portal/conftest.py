"""Fixtures of the portal tests: a real plane (SQLite and PostgreSQL) and the portal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ppos.controlplane.core.logging import SecretRegistry
from tests.portal.support import Operator, PortalWorld, operator_for, portal_world


@pytest.fixture
async def world(
    database_url: str, tmp_path: Path, canary_token: str, secret_registry: SecretRegistry
) -> AsyncIterator[PortalWorld]:
    async for made in portal_world(database_url, tmp_path, canary_token, secret_registry):
        yield made


@pytest.fixture
async def operator(world: PortalWorld) -> AsyncIterator[Operator]:
    """Signed in as `ada`."""
    async with operator_for(world) as http:
        person = Operator(http)
        response = await person.sign_in(world.token)
        assert response.status_code == 303, response.text
        yield person
