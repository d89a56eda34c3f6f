"""Process helpers shared by the benchmarks: ports, CPU time, CPU pinning."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(cpus: set[int]) -> Callable[[], None]:
    """A preexec_fn that pins a child process to `cpus`."""
    return lambda: os.sched_setaffinity(0, cpus)
