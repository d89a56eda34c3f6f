"""Load side of the two-hop benchmarks: start a server mode, drive it, measure.

The server is the bottleneck (it handles both hops). It runs in its own
process pinned to one CPU, the callers in this process pinned to the other,
so neither mode is measured while the two fight over a core. Modes alternate
over rounds and medians are compared, so drift hits both sides alike.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from bench.processes import cpu_seconds, free_port, pin
from bench.two_hops_server import RELAY

CONCURRENCY = 32
CPUS = sorted(os.sched_getaffinity(0))
SERVER_CPUS = {CPUS[0]}
CLIENT_CPUS = set(CPUS[1:]) or set(CPUS)


@dataclass
class Runs:
    """Per mode: (calls per second, server CPU microseconds per call) of each round,
    and the share of its peer hops whose token the server knew as its own."""

    samples: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    recognised: dict[str, list[float]] = field(default_factory=dict)

    def rate(self, mode: str) -> float:
        return statistics.median(sample[0] for sample in self.samples[mode])

    def cpu(self, mode: str) -> float:
        return statistics.median(sample[1] for sample in self.samples[mode])


def write_tls(tls_dir: Path) -> grpc.ChannelCredentials:
    """A CA, the server's certificate (also its client certificate on the peer hop)
    and the callers' mutual TLS credentials, made in memory by trustme."""
    import trustme  # a dev dependency, as the benchmarks are

    tls_dir.mkdir(exist_ok=True)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tls_dir / "ca.pem"))
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.private_key_pem.write_to_path(str(tls_dir / "server-key.pem"))
    (tls_dir / "server.pem").write_bytes(b"".join(b.bytes() for b in server.cert_chain_pems))
    caller = ca.issue_cert("bench.caller")
    return grpc.ssl_channel_credentials(
        ca.cert_pem.bytes(),
        caller.private_key_pem.bytes(),
        b"".join(b.bytes() for b in caller.cert_chain_pems),
    )


def _channel(address: str, tls: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    if tls is None:
        return grpc.aio.insecure_channel(address)
    return grpc.aio.secure_channel(address, tls)


async def _drive(
    address: str, token: str | None, seconds: float, pid: int, tls: grpc.ChannelCredentials | None
) -> tuple[float, float, int]:
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    async with _channel(address, tls) as channel:
        call = channel.unary_unary(RELAY)
        await call(b"warm-up", metadata=metadata, timeout=10)
        done = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await call(b"x" * 64, metadata=metadata, timeout=10)
                done += 1

        started, cpu = time.perf_counter(), cpu_seconds(pid)
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed, cpu = time.perf_counter() - started, cpu_seconds(pid) - cpu
        return done / elapsed, cpu / done * 1e6, done + 1  # and the warm-up call


def _recognised(process: subprocess.Popen[str]) -> int:
    """The count the server printed as it stopped (see two_hops_server.serve)."""
    assert process.stdout is not None
    last = process.stdout.read().split()
    if len(last) != 2 or last[0] != "recognised":
        raise RuntimeError(f"server did not report its recognised tokens: {last!r}")
    return int(last[1])


def _start(mode: str, data_dir: Path, token_file: Path) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.two_hops_server",
            "--mode",
            mode,
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--token-file",
            str(token_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=pin(SERVER_CPUS),
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        raise RuntimeError(f"{mode} server did not start")
    return process, f"127.0.0.1:{port}"


async def measure(modes: tuple[str, ...], *, rounds: int, seconds: float) -> Runs:
    """Alternate `modes` for `rounds`; the `auth` mode's callers send the control token."""
    runs = Runs({mode: [] for mode in modes}, {mode: [] for mode in modes})
    own_cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, CLIENT_CPUS)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            token = "ppos_bench_" + secrets.token_urlsafe(32)
            token_file = Path(tmp) / "token"
            token_file.write_text(token)
            os.chmod(token_file, 0o600)
            tls = write_tls(Path(tmp) / "tls") if any(m.endswith("-tls") for m in modes) else None
            for _ in range(rounds):
                for mode in modes:
                    process, address = _start(mode, Path(tmp), token_file)
                    try:
                        credential = token if mode.startswith("auth") else None
                        caller_tls = tls if mode.endswith("-tls") else None
                        rate, cpu, calls = await _drive(
                            address, credential, seconds, process.pid, caller_tls
                        )
                        runs.samples[mode].append((rate, cpu))
                    finally:
                        process.send_signal(signal.SIGTERM)
                        process.wait(10)
                    runs.recognised[mode].append(_recognised(process) / calls)
    finally:
        os.sched_setaffinity(0, own_cpus)
    return runs


def setup_note(rounds: int, seconds: float) -> str:
    return (
        f"{CONCURRENCY} concurrent callers, {rounds} alternating round(s) of {seconds:g}s per "
        f"mode; server pinned to CPU {sorted(SERVER_CPUS)}, callers to {sorted(CLIENT_CPUS)}"
    )
