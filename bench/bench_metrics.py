"""RPC metrics (a count per method and code, a latency histogram per method) on
two hops, against the same two hops registered bare: throughput, and server
CPU time per call (less disturbed by other work on a shared machine).

Server and client run in separate processes; modes alternate over several
rounds and the medians are compared, so drift of a shared machine hits both
sides alike.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import grpc

from bench.auth_server import RELAY
from bench.harness import Mode, Result

CONCURRENCY = 32


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _measure(address: str, seconds: float, pid: int) -> tuple[float, float]:
    """(calls per second, server CPU microseconds per call)."""
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(RELAY)
        await call(b"warm-up", timeout=10)
        done = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await call(b"x" * 64, timeout=10)
                done += 1

        started, cpu = time.perf_counter(), _cpu_seconds(pid)
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed, cpu = time.perf_counter() - started, _cpu_seconds(pid) - cpu
        return done / elapsed, cpu / done * 1e6


def _start(mode: str) -> tuple[subprocess.Popen[str], str]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.metrics_server", "--mode", mode, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        raise RuntimeError(f"{mode} server did not start")
    return process, f"127.0.0.1:{port}"


async def run(mode: Mode) -> Result:
    result = Result("metrics", mode)
    seconds, rounds = (1.0, 1) if mode == "smoke" else (5.0, 3)
    rates: dict[str, list[float]] = {"plain": [], "metered": []}
    cpu: dict[str, list[float]] = {"plain": [], "metered": []}
    for _ in range(rounds):
        for kind in ("plain", "metered"):
            process, address = _start(kind)
            try:
                rate, micros = await _measure(address, seconds, process.pid)
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(10)
            rates[kind].append(rate)
            cpu[kind].append(micros)
    plain = result.figure(
        "two hops, bare (calls/s, median)", statistics.median(rates["plain"]), "/s"
    )
    metered = result.figure(
        "two hops, RPC metrics (calls/s, median)", statistics.median(rates["metered"]), "/s"
    )
    result.ratio("metered / bare throughput", metered, plain)
    bare_cpu = result.figure(
        "server CPU per two-hop call, bare (median)", statistics.median(cpu["plain"]), "µs"
    )
    metered_cpu = result.figure(
        "server CPU per two-hop call, metered (median)", statistics.median(cpu["metered"]), "µs"
    )
    result.ratio("metered / bare server CPU per call", metered_cpu, bare_cpu)
    result.target("metered / bare throughput", ">=", 0.9)
    result.target("metered / bare server CPU per call", "<=", 1.15)
    result.notes.append(
        f"{CONCURRENCY} concurrent callers, {rounds} alternating round(s) of {seconds:g}s per mode"
    )
    return result
