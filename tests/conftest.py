"""Shared fixtures: real databases (SQLite and PostgreSQL), a real server, the canary.

Every database-backed test takes `database_url`, which runs it once on a
migrated SQLite file and once on a migrated PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import io
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path

import pytest
import uvloop

from ppos.controlplane.core.logging import SecretRegistry, configure_logging
from tests.support.canary import scan_database, scan_files, scan_text
from tests.support.databases import PostgresDatabases, SqliteDatabases, pg_admin_url
from tests.support.servers import RunningPlane, start_plane, stop_plane
from tests.support.tls import TlsFiles, new_tls_files

BACKENDS = ["sqlite", "postgresql"]
# The loop in-process servers run on: the one `serve` runs on by default
# (ServerSettings.event_loop); PPOS_TEST_EVENT_LOOP=asyncio for the other.
TEST_EVENT_LOOP = os.environ.get("PPOS_TEST_EVENT_LOOP", "uvloop")


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    if TEST_EVENT_LOOP == "asyncio":
        return {"asyncio": asyncio.new_event_loop}
    return {"uvloop": uvloop.new_event_loop}


class _Tee(io.TextIOBase):
    """Log sink of the whole session: kept for the canary scan."""

    def __init__(self) -> None:
        self.buffer_ = io.StringIO()

    def write(self, text: str) -> int:
        return self.buffer_.write(text)

    def isatty(self) -> bool:
        return False

    def getvalue(self) -> str:
        return self.buffer_.getvalue()


@pytest.fixture(scope="session")
def canary_token() -> str:
    """The control token of every server in the session: it must never leak."""
    return "ppos_canary_" + secrets.token_urlsafe(32)


@pytest.fixture(scope="session")
def session_log() -> _Tee:
    return _Tee()


_SESSION: dict[str, object] = {}


@pytest.fixture(scope="session")
def secret_registry(session_log: _Tee) -> SecretRegistry:
    level = os.environ.get("PPOS_TEST_LOG_LEVEL", "debug")
    registry = configure_logging(level=level, fmt="json", stream=session_log)
    _SESSION.update(level=level, stream=session_log, registry=registry)
    return registry


def restore_session_logging() -> None:
    """Put back the session's logging after a test configured its own."""
    configure_logging(
        level=str(_SESSION["level"]),
        fmt="json",
        stream=_SESSION["stream"],  # type: ignore[arg-type]
        secrets=_SESSION["registry"],  # type: ignore[arg-type]
    )


@pytest.fixture(scope="session")
def sqlite_databases(tmp_path_factory: pytest.TempPathFactory) -> SqliteDatabases:
    return SqliteDatabases(tmp_path_factory.mktemp("sqlite-template"))


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases]:
    if os.environ.get("PPOS_TEST_SKIP_POSTGRES") == "1":
        pytest.skip("PPOS_TEST_SKIP_POSTGRES=1: PostgreSQL tests skipped on request")
    try:
        databases = PostgresDatabases(pg_admin_url())
    except Exception as exc:
        pytest.fail(
            f"PostgreSQL unreachable at {pg_admin_url()}: {exc}. Run scripts/ensure-postgres.sh "
            "(tests never skip PostgreSQL silently)",
            pytrace=False,
        )
    yield databases
    databases.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, canary_token: str
) -> Iterator[str]:
    """A freshly migrated database of the test's backend, scanned for the canary after."""
    if backend == "sqlite":
        sqlite: SqliteDatabases = request.getfixturevalue("sqlite_databases")
        url = sqlite.create(tmp_path)
        yield url
        assert scan_database(url, canary_token) == [], "canary token stored in the database"
        return
    postgres: PostgresDatabases = request.getfixturevalue("postgres_databases")
    name = postgres.create()
    url = postgres.url_of(name)
    try:
        yield url
        assert scan_database(url, canary_token) == [], "canary token stored in the database"
    finally:
        postgres.drop(name)


@pytest.fixture
async def plane(
    database_url: str,
    tmp_path: Path,
    canary_token: str,
    secret_registry: SecretRegistry,
) -> AsyncIterator[RunningPlane]:
    """The whole control plane on a loopback port, on the test's database."""
    data_dir = tmp_path / "data"
    running = await start_plane(
        token=canary_token,
        database_url=database_url,
        data_dir=data_dir,
        secrets=secret_registry,
        relay_target="",
    )
    try:
        yield running
    finally:
        await stop_plane(running)
    assert scan_files(tmp_path, canary_token) == [], "canary token written to a file"


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    """A CA made for this test, with a loopback server and a client certificate."""
    return new_tls_files(tmp_path / "tls")


@pytest.fixture
async def mtls_plane(
    tls_files: TlsFiles,
    database_url: str,
    tmp_path: Path,
    canary_token: str,
    secret_registry: SecretRegistry,
) -> AsyncIterator[RunningPlane]:
    """The whole control plane requiring mutual TLS (`tls_files`); its `channel`
    presents the client certificate, and Relay calls Echo through its own port."""
    running = await start_plane(
        token=canary_token,
        database_url=database_url,
        data_dir=tmp_path / "data",
        secrets=secret_registry,
        extra_env=tls_files.plane_env(),
        relay_target="",
        channel_credentials=tls_files.client_credentials(),
    )
    running.tls = tls_files
    try:
        yield running
    finally:
        await stop_plane(running)
    assert scan_files(tmp_path, canary_token) == [], "canary token written to a file"


@pytest.fixture(scope="session", autouse=True)
def _canary_never_logged(
    session_log: _Tee, canary_token: str, secret_registry: SecretRegistry
) -> Iterator[None]:
    yield
    leaked = scan_text("session log", session_log.getvalue(), canary_token)
    assert leaked == [], "canary control token appeared in a log line"
