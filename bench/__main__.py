"""`python -m bench [--smoke|--full] [NAME ...]`."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys

from bench.harness import Benchmark, Mode

# name -> module exposing `async def run(mode) -> Result`
BENCHMARKS = {
    "auth": "bench.bench_auth",
    "metrics": "bench.bench_metrics",
    "node_sweep": "bench.bench_node_sweep",
    "watch_fanout": "bench.bench_watch_fanout",
    "sync_ingest": "bench.bench_sync_ingest",
    "verify": "bench.bench_verify",
    "outbox": "bench.bench_outbox",
    "read_path": "bench.bench_read_path",
    "load": "bench.bench_load",
    "capacity": "bench.bench_capacity",
    "fuzz": "bench.bench_fuzz",
    "portal": "bench.bench_portal",
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_const", dest="mode", const="smoke")
    mode.add_argument("--full", action="store_const", dest="mode", const="full")
    parser.add_argument(
        "names", nargs="*", help=f"benchmarks to run (default all: {', '.join(BENCHMARKS)})"
    )
    args = parser.parse_args()
    chosen: Mode = args.mode or "smoke"
    names = args.names or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    for name in names:
        run: Benchmark = importlib.import_module(BENCHMARKS[name]).run
        result = asyncio.run(run(chosen))
        print(result.report(), flush=True)
        print(f"  saved {result.save()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
