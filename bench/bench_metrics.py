"""RPC metrics (a count per method and code, a latency histogram per method) on
two hops, against the same two hops registered bare: throughput, and server
CPU time per call (less disturbed by other work on a shared machine).

See bench/two_hops.py for how the two hops are driven and measured.
"""

from __future__ import annotations

from bench.harness import Mode, Result
from bench.two_hops import measure, setup_note


async def run(mode: Mode) -> Result:
    result = Result("metrics", mode)
    seconds, rounds = (1.0, 1) if mode == "smoke" else (5.0, 3)
    runs = await measure(("plain", "metered"), rounds=rounds, seconds=seconds)
    plain = result.figure("two hops, bare (calls/s, median)", runs.rate("plain"), "/s")
    metered = result.figure("two hops, RPC metrics (calls/s, median)", runs.rate("metered"), "/s")
    result.ratio("metered / bare throughput", metered, plain)
    bare_cpu = result.figure("server CPU per two-hop call, bare (median)", runs.cpu("plain"), "µs")
    metered_cpu = result.figure(
        "server CPU per two-hop call, metered (median)", runs.cpu("metered"), "µs"
    )
    result.ratio("metered / bare server CPU per call", metered_cpu, bare_cpu)
    result.target("metered / bare throughput", ">=", 0.9)
    result.target("metered / bare server CPU per call", "<=", 1.15)
    result.notes.append(setup_note(rounds, seconds))
    return result
