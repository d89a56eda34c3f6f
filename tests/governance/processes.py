"""The control plane as a real process (`ppos-control-plane serve`), for crash tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

STARTUP_TIMEOUT = 60.0
# A log line may be long (a chained exception's traceback): asyncio's default
# line limit (64 KiB) would end the reader, leave the pipe unread and, once it
# is full, stall or break the plane's logging, which a crash test must not do.
LINE_LIMIT = 16 * 1024 * 1024


@dataclass
class PlaneProcess:
    process: asyncio.subprocess.Process
    address: str = ""
    lines: list[str] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    async def kill(self) -> None:
        """SIGKILL: no clean-up, no goodbye; whatever was in flight stays in flight."""
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        if self._reader is not None:
            await self._reader

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(15):
                    await self.process.wait()
            except TimeoutError:
                await self.kill()
        if self._reader is not None:
            await self._reader


class ExitedBeforeStart(RuntimeError):
    """The process ended before its `server.started` line (exit code and last lines said)."""


async def start_plane_process(env: dict[str, str], log_path: Path) -> PlaneProcess:
    """Start `serve` with `env` and wait for its `server.started` line."""
    full = {**os.environ, **env, "PPOS_LOG_FORMAT": "json", "PPOS_LISTEN": "127.0.0.1:0"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ppos.controlplane.runtime.cli",
        "serve",
        env=full,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        limit=LINE_LIMIT,
    )
    running = PlaneProcess(process)
    started = asyncio.get_running_loop().create_future()

    async def read() -> None:
        assert process.stderr is not None
        with log_path.open("a") as log:
            async for raw in process.stderr:
                line = raw.decode("utf-8", "replace")
                running.lines.append(line)
                log.write(line)
                if not started.done() and '"server.started"' in line:
                    started.set_result(json.loads(line)["address"])
            # Said in the log, so a test that finds a replica gone can tell how it ended.
            ended = f"(test harness) process ended with exit code {await process.wait()}\n"
            running.lines.append(ended)
            log.write(ended)
        if not started.done():
            code = await process.wait()
            started.set_exception(
                ExitedBeforeStart(
                    f"control plane exited {code} before it started: {running.lines[-3:]}"
                )
            )

    running._reader = asyncio.create_task(read())
    async with asyncio.timeout(STARTUP_TIMEOUT):
        running.address = await started
    return running
