"""`make demo`: the control plane on embedded SQLite syncing simulated regions.

Everything lives in `.demo/` (delete it to start over):

1. a control token in `.demo/control-token` (mode 0600), made once;
2. the plane's signing keys and public `jwks.json`, which the simulated
   registries use to verify every call's PREFLIGHT_JWT;
3. sample records: the committed odd engine outputs plus a deterministic
   realistic set (200 bytes to 2 MB) per region;
4. `ppos-preflight-sim` for eu-west-1 and us-east-1, and for ap-south-1 one
   that corrupts a few records on purpose; then `ppos-control-plane serve`
   syncing all three;
5. a sweep, the sync status, and how to call the plane with grpcurl.

It keeps serving until Ctrl-C, then stops everything cleanly. The token is
read from its file and never printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console
from rich.table import Table

from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as pb
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
DATA = DEMO / "data"
LOGS = DEMO / "logs"
TOKEN_FILE = DEMO / "control-token"
BIN = Path(sys.executable).parent
ODD_SAMPLES = ROOT / "src/ppos/preflightsim/samples/odd.jsonl"
REGIONS = {"eu-west-1": 1, "us-east-1": 2}  # region -> sample seed
PREFERRED_PORT = 50051
Metadata = tuple[tuple[str, str], ...]
AUTH = "authorization: Bearer ${PPOS_CONTROL_TOKEN}"
console = Console(width=max(110, shutil.get_terminal_size().columns))


def free_port(preferred: int = 0) -> int:
    for candidate in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            port: int = sock.getsockname()[1]
            return port
    raise SystemExit("demo: no free port")


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def check(self) -> None:
        if self.popen.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise SystemExit(f"demo: {self.name} exited ({self.popen.returncode}):\n{tail}")


def run(argv: list[str], env: dict[str, str] | None = None) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(
            f"demo: {' '.join(argv[:3])} failed:\n{done.stderr[-3000:]}\n"
            f"(state left by an older version? delete {DEMO.relative_to(ROOT)}/ to start over)"
        )
    return done.stdout


def spawn(name: str, argv: list[str], env: dict[str, str]) -> Child:
    log = LOGS / f"{name}.log"
    with log.open("wb") as out:
        # Own session: Ctrl-C reaches the demo, which stops the children in order.
        popen = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Child(name, popen, log)


def prepare(env: dict[str, str]) -> None:
    DEMO.mkdir(exist_ok=True)
    LOGS.mkdir(exist_ok=True)
    if not TOKEN_FILE.exists():
        run([str(BIN / "ppos-control-plane"), "token", "generate", "--out", str(TOKEN_FILE)])
        console.print(f"control token generated into {TOKEN_FILE.relative_to(ROOT)} (0600)")
    # The plane's keys exist before anyone starts: the registries verify with them.
    jwks = run([str(BIN / "ppos-control-plane"), "keys", "jwks"], env)
    (DATA / "jwks.json").write_text(jwks)
    for region, seed in REGIONS.items():
        target = DEMO / "samples" / f"realistic-{region}.jsonl"
        if not target.exists():
            run(
                [
                    sys.executable,
                    "-m",
                    "ppos.preflightsim.samples",
                    "--out",
                    str(DEMO / "samples"),
                    "--region",
                    region,
                    "--seed",
                    str(seed),
                ]
            )


# A third region whose simulated registry misbehaves on purpose, to show the
# quarantine: two corrupted records (a wrong SHA-256, bytes that are not a
# record), one record sent twice, and every page shuffled.
FAULTY_REGION = "ap-south-1"
FAULTY_ARGS = [
    "--synthetic",
    "300",
    "--synthetic-size",
    "2048",
    "--fault-wrong-digest-at",
    "17",
    "--fault-malformed-at",
    "42:garbage",
    "--fault-repeat-at",
    "100",
    "--fault-reorder",
]


def start_regions(env: dict[str, str]) -> tuple[list[Child], dict[str, int]]:
    children, ports = [], {}
    for region in [*REGIONS, FAULTY_REGION]:
        port = free_port()
        if region == FAULTY_REGION:
            sources = FAULTY_ARGS
        else:
            records = [DEMO / "samples" / f"realistic-{region}.jsonl"]
            if region == "eu-west-1":
                records.insert(0, ODD_SAMPLES)
            sources = [arg for path in records for arg in ("--records", str(path))]
        argv = [
            str(BIN / "ppos-preflight-sim"),
            "--region",
            region,
            "--listen",
            f"127.0.0.1:{port}",
            "--jwks-file",
            str(DATA / "jwks.json"),
            *sources,
        ]
        children.append(spawn(f"sim-{region}", argv, env))
        ports[region] = port
    return children, ports


async def wait_serving(address: str, children: list[Child], service: str = "") -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for child in children:
                child.check()
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            await asyncio.sleep(0.2)
    raise SystemExit(f"demo: {address} did not become healthy; see {LOGS.relative_to(ROOT)}/")


def status_table(statuses: list[pb.RegionSyncStatus]) -> Table:
    table = Table(title="Registry sync status")
    for column in ("region", "records", "bytes", "quarantined", "lag", "last success", "cursor"):
        table.add_column(column, no_wrap=True)
    for status in statuses:
        lag = f"{status.lag_changes} changes"
        success = (
            status.last_success_time.ToDatetime().strftime("%H:%M:%S UTC")
            if status.last_success_time.seconds
            else "never"
        )
        table.add_row(
            status.region,
            f"{status.records_synced:,}",
            f"{status.bytes_synced:,}",
            str(status.quarantined_count),
            lag,
            success + (f"  error: {status.last_error}" if status.last_error else ""),
            status.cursor or "(start)",
        )
    return table


def describe(sweep: pb.Sweep) -> str:
    state = pb.SweepState.Name(sweep.state).removeprefix("SWEEP_STATE_")
    text = (
        f"sweep {sweep.sweep_id} ({sweep.started_by}) {state}: "
        f"{sweep.records_synced:,} records, {sweep.bytes_synced:,} bytes in {sweep.pages} pages, "
        f"{sweep.duplicates_skipped} repeats skipped, {sweep.quarantined} quarantined"
    )
    return text + (f", error: {sweep.error}" if sweep.error else "")


async def finished(
    stub: pb_grpc.RegistrySyncServiceStub, sweep: pb.Sweep, md: Metadata
) -> pb.Sweep:
    while sweep.state in (pb.SWEEP_STATE_PENDING, pb.SWEEP_STATE_RUNNING):
        await asyncio.sleep(0.2)
        request = pb.GetSweepRequest(sweep_id=sweep.sweep_id)
        sweep = (await stub.GetSweep(request, metadata=md)).sweep
    return sweep


async def sweep_and_show(address: str) -> None:
    token = TOKEN_FILE.read_text().strip()
    md: Metadata = (("authorization", f"Bearer {token}"), ("x-operator", "demo"))
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.RegistrySyncServiceStub(channel)
        # The scheduler sweeps every region that is due as soon as the plane starts.
        recent = await stub.ListSweeps(pb.ListSweepsRequest(page_size=1), metadata=md)
        for sweep in recent.sweeps:
            console.print(describe(await finished(stub, sweep, md)), highlight=False)
        # And on demand: this one finds the regions already at the head of their feeds.
        started = await stub.StartSweep(
            pb.StartSweepRequest(request_id=f"demo-{int(time.time())}"), metadata=md
        )
        console.print(describe(await finished(stub, started.sweep, md)), highlight=False)
        statuses = await stub.ListSyncStatuses(pb.ListSyncStatusesRequest(), metadata=md)
        console.print(status_table(list(statuses.statuses)))
        quarantined = await stub.ListQuarantinedRecords(
            pb.ListQuarantinedRecordsRequest(page_size=5), metadata=md
        )
        console.print(
            f"quarantined ({FAULTY_REGION}'s simulated registry corrupts records on purpose):",
            highlight=False,
        )
        for record in quarantined.records:
            console.print(
                f"  #{record.quarantine_id} {record.region} {record.reason} "
                f"{record.job_id or '(unreadable)'}: {record.detail[:90]}",
                highlight=False,
                markup=False,
            )


def how_to_call(address: str) -> None:
    grpcurl = f".venv/bin/grpcurl -plaintext -expand-headers -H {AUTH!r}"
    service = "ppos.controlplane.registrysync.v1.RegistrySyncService"
    job = '{"region": "eu-west-1", "job_id": "job_1779116602472_1d246"}'
    console.print(
        "\nIn another shell (the token stays in its file and the environment, "
        "never on a command line):"
    )
    for line in (
        f"export PPOS_CONTROL_TOKEN=$(cat {TOKEN_FILE.relative_to(ROOT)})",
        f".venv/bin/grpcurl -plaintext {address} list",
        f"{grpcurl} {address} {service}/ListSyncStatuses",
        f"{grpcurl} -d '{{}}' {address} {service}/StartSweep",
        f"{grpcurl} -d '{job}' {address} {service}/GetSyncedJob",
        f'{grpcurl} -d \'{{"omit_payload": true, "page_size": 5}}\' '
        f"{address} {service}/ListSyncedJobs",
        f"{grpcurl} {address} {service}/WatchSyncStatus",
    ):
        console.print(f"  {line}", highlight=False, soft_wrap=True, markup=False)
    console.print(f"Logs in {LOGS.relative_to(ROOT)}/. Ctrl-C stops everything.", highlight=False)


async def main_async() -> int:
    env = dict(os.environ)
    env.update({"PPOS_DATA_DIR": str(DATA), "PPOS_LOG_FORMAT": "json", "PPOS_LOG_LEVEL": "info"})
    env.pop("PPOS_CONTROL_TOKEN", None)
    env.pop("PPOS_DATABASE_URL", None)  # embedded SQLite in .demo/data
    prepare(env)
    children, ports = start_regions(env)
    try:
        for region, port in ports.items():
            await wait_serving(f"127.0.0.1:{port}", children)
            console.print(f"simulated registry {region} serving on 127.0.0.1:{port}")
        listen = f"127.0.0.1:{free_port(PREFERRED_PORT)}"
        env.update(
            {
                "PPOS_LISTEN": listen,
                "PPOS_CONTROL_TOKEN_FILE": str(TOKEN_FILE),
                "PPOS_SYNC_REGIONS": ",".join(f"{r}=127.0.0.1:{p}" for r, p in ports.items()),
            }
        )
        children.append(spawn("control-plane", [str(BIN / "ppos-control-plane"), "serve"], env))
        await wait_serving(listen, children)
        console.print(f"control plane serving on {listen} (SQLite in {DATA.relative_to(ROOT)})")
        await sweep_and_show(listen)
        how_to_call(listen)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        while not stop.is_set():
            for child in children:
                child.check()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        console.print("\nstopping...")
    finally:
        for child in reversed(children):
            child.stop()
    console.print("stopped cleanly")
    return 0


def main() -> int:
    return asyncio.run(main_async())


if __name__ == "__main__":
    raise SystemExit(main())
