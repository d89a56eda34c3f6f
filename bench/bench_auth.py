"""Edge authentication plus one peer hop with a minted PREFLIGHT_JWT, against
the same two hops with no authentication at all; and mint/verify cost per
token against bare PyJWT on the same key.

Server and client run in separate processes (the server is the bottleneck:
it handles both hops); modes alternate over several rounds and the medians
are compared, so drift of a shared machine hits both sides alike.
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
import timeit
from collections.abc import Callable
from pathlib import Path

import grpc
import jwt

from bench.auth_server import BACK, ECHO, RELAY
from bench.harness import Mode, Result
from ppos.controlplane.security.keys import KeyRing
from ppos.controlplane.security.tokens import TokenMinter, TokenVerifier

CONCURRENCY = 32
# With two or more CPUs the server gets one and the load generator another, so
# neither mode is measured while the two fight over the same core.
CPUS = sorted(os.sched_getaffinity(0))
SERVER_CPUS = {CPUS[0]}
CLIENT_CPUS = set(CPUS[1:]) or set(CPUS)


def _pin(cpus: set[int]) -> Callable[[], None]:
    return lambda: os.sched_setaffinity(0, cpus)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _throughput(
    address: str, token: str | None, seconds: float, pid: int
) -> tuple[float, float]:
    """(calls per second, server CPU microseconds per call)."""
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(RELAY)
        await call(b"warm-up", metadata=metadata, timeout=10)
        done = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await call(b"x" * 64, metadata=metadata, timeout=10)
                done += 1

        started, cpu = time.perf_counter(), _cpu_seconds(pid)
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed, cpu = time.perf_counter() - started, _cpu_seconds(pid) - cpu
        return done / elapsed, cpu / done * 1e6


def _start(mode: str, data_dir: Path, token_file: Path) -> tuple[subprocess.Popen[str], str]:
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.auth_server",
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
        preexec_fn=_pin(SERVER_CPUS),
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        raise RuntimeError(f"{mode} server did not start")
    return process, f"127.0.0.1:{port}"


def _stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(10)


def _token_costs(result: Result, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ring = KeyRing.from_directory(Path(tmp) / "keys")
    minter = TokenMinter(ring, issuer="ppos-control-plane")
    verifier = TokenVerifier(ring, issuer="ppos-control-plane")
    key = ring.active
    public = key.public_key

    def ours_mint() -> str:
        return minter.mint_preflight(
            subject="ppos.controlplane.bench", audience=BACK, method=ECHO, request_id="req_b"
        )

    claims = {
        "iss": "ppos-control-plane",
        "sub": "s",
        "aud": BACK,
        "iat": int(time.time()),
        "exp": int(time.time()) + 60,
        "jti": secrets.token_hex(16),
        "mth": ECHO,
        "rid": "r",
    }

    def bare_mint() -> str:
        return jwt.encode(claims, key.private_key, algorithm="ES256", headers={"kid": key.kid})

    token = ours_mint()
    bare_token = bare_mint()

    def ours_verify() -> object:
        return verifier.verify_preflight(token, audience=BACK, method=ECHO)

    def bare_verify() -> object:
        return jwt.decode(bare_token, public, algorithms=["ES256"], audience=BACK)

    def micros(fn: object) -> float:
        timer = timeit.Timer(fn)  # type: ignore[arg-type]
        return min(timer.repeat(repeat=5, number=rounds)) / rounds * 1e6

    ours_m, bare_m = micros(ours_mint), micros(bare_mint)
    ours_v, bare_v = micros(ours_verify), micros(bare_verify)
    result.figure("mint µs/token (ours)", ours_m, "µs")
    result.figure("mint µs/token (bare PyJWT)", bare_m, "µs")
    result.ratio("mint cost ours/bare", ours_m, bare_m)
    result.figure("verify µs/token (ours, all checks)", ours_v, "µs")
    result.figure("verify µs/token (bare PyJWT decode)", bare_v, "µs")
    result.ratio("verify cost ours/bare", ours_v, bare_v)


async def run(mode: Mode) -> Result:
    result = Result("auth", mode)
    seconds, rounds = (1.0, 1) if mode == "smoke" else (5.0, 3)
    runs: dict[str, list[tuple[float, float]]] = {"plain": [], "auth": []}
    own_cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, CLIENT_CPUS)
    with tempfile.TemporaryDirectory() as tmp:
        token = "ppos_bench_" + secrets.token_urlsafe(32)
        token_file = Path(tmp) / "token"
        token_file.write_text(token)
        os.chmod(token_file, 0o600)
        for _ in range(rounds):
            for kind, credential in (("plain", None), ("auth", token)):
                process, address = _start(kind, Path(tmp), token_file)
                try:
                    runs[kind].append(await _throughput(address, credential, seconds, process.pid))
                finally:
                    _stop(process)
    os.sched_setaffinity(0, own_cpus)

    def median(kind: str, index: int) -> float:
        return statistics.median(run[index] for run in runs[kind])

    plain = result.figure("two hops, no auth (calls/s, median)", median("plain", 0), "/s")
    authed = result.figure(
        "two hops, edge auth + minted JWT (calls/s, median)", median("auth", 0), "/s"
    )
    result.ratio("authenticated / unauthenticated throughput", authed, plain)
    result.target("authenticated / unauthenticated throughput", ">=", 0.75)
    plain_cpu = result.figure("server CPU per call, no auth (median)", median("plain", 1), "µs")
    auth_cpu = result.figure("server CPU per call, auth (median)", median("auth", 1), "µs")
    # The server is the bottleneck; calls per CPU-second is its capacity, and unlike
    # wall-clock throughput it does not move with other load on a shared machine.
    result.ratio("authenticated / unauthenticated capacity (CPU/call)", plain_cpu, auth_cpu)
    _token_costs(result, rounds=200 if mode == "smoke" else 2000)
    result.notes.append(
        f"{CONCURRENCY} concurrent callers, {rounds} alternating round(s) of {seconds:g}s per mode;"
        f" server pinned to CPU {sorted(SERVER_CPUS)}, callers to {sorted(CLIENT_CPUS)}"
    )
    return result
