"""RPC metrics (a count per method and code, a latency histogram per method) on
two hops, against the same two hops registered bare.

Server and client run in separate processes; modes alternate over several
rounds and the medians are compared, so drift of a shared machine hits both
sides alike.
"""

from __future__ import annotations

import statistics
import subprocess
import sys

from bench.bench_auth import CONCURRENCY, _free_port, _stop, _throughput
from bench.harness import Mode, Result


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
    runs: dict[str, list[float]] = {"plain": [], "metered": []}
    for _ in range(rounds):
        for kind in ("plain", "metered"):
            process, address = _start(kind)
            try:
                runs[kind].append(await _throughput(address, None, seconds))
            finally:
                _stop(process)
    plain = result.figure(
        "two hops, bare (calls/s, median)", statistics.median(runs["plain"]), "/s"
    )
    metered = result.figure(
        "two hops, RPC metrics (calls/s, median)", statistics.median(runs["metered"]), "/s"
    )
    result.ratio("metered / bare throughput", metered, plain)
    result.target("metered / bare throughput", ">=", 0.9)
    result.notes.append(
        f"{CONCURRENCY} concurrent callers, {rounds} alternating round(s) of {seconds:g}s per mode"
    )
    return result
