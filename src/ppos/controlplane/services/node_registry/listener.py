"""LISTEN/NOTIFY on PostgreSQL: wake this replica when any replica commits.

One dedicated autocommit connection per process listens on the registry's
channels and calls a handler per notification. When the connection drops it
reconnects with backoff and calls every handler once (notifications may have
been missed meanwhile); the hub's poll covers the gap.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping

import psycopg
import structlog
from psycopg import sql
from sqlalchemy.engine import make_url

_log = structlog.get_logger("ppos.noderegistry.listener")
MAX_BACKOFF = 30.0


def libpq_conninfo(sqlalchemy_url: str) -> str:
    """The libpq URI of a `postgresql+psycopg://` SQLAlchemy URL."""
    return (
        make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)
    )


class PgListener:
    def __init__(self, url: str, handlers: Mapping[str, Callable[[str], None]]) -> None:
        self._conninfo = libpq_conninfo(url)
        self._handlers = dict(handlers)
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pg-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - logged; reconnect after a pause
                self.connected.clear()
                _log.warning(
                    "listener.disconnected",
                    error=type(exc).__name__,
                    sqlstate=getattr(exc, "sqlstate", None),
                    retry_seconds=backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _listen(self) -> None:
        async with await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True, connect_timeout=5
        ) as connection:
            for channel in self._handlers:
                await connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            self.connected.set()
            for handler in self._handlers.values():
                handler("")  # we may have missed notifications while away
            async for note in connection.notifies():
                on_note = self._handlers.get(note.channel)
                if on_note is not None:
                    on_note(note.payload)
