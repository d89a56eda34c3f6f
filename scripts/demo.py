"""`make demo`: the whole control plane moving, on embedded SQLite, within a minute.

1. checks that its port (50051, `--port`) is free, and refuses to start if not;
2. makes a control token (`.demo/control-token`, 0600, kept between runs) and
   a fresh database and signing keys in `.demo/data`;
3. starts the control plane with three regions (eu-west-1, us-east-1,
   ap-south-1), each a simulated registry and gateway (`ppos-preflight-sim`),
   and short node-health settings so changes show within seconds;
4. seeds partners, tenants with queues, routes and the four governance
   policies (runtime failure -> re-image + retry, degraded -> lower queue
   capacity, partial -> request the remainder, findings -> review);
5. starts a fleet of simulated nodes (`ppos-node-agent`) in every region;
6. starts the registries, which produce their jobs over time (a runtime
   failure that re-images its node and comes back as revision 2, findings,
   degraded and partial jobs; ap-south-1 also corrupts a few on purpose);
7. stops part of the us-east-1 fleet, whose nodes go NOT_READY then LOST;
8. prints what moved every few seconds, then serves until Ctrl-C.

The token is read from its file and never printed.
"""

from __future__ import annotations

import argparse
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

import demo_world as world

from ppos.controlplane.client import ControlPlane, load_config

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
REGIONS = ("eu-west-1", "us-east-1", "ap-south-1")
FLEET = 4  # nodes per region that keep running
LEAVING = 2  # extra us-east-1 nodes whose agents stop
EXIT_PORT_TAKEN = 3
# ap-south-1's registry misbehaves on purpose, to show the quarantine: a wrong
# SHA-256, bytes that are not a record, a record sent twice.
FAULTS = ["--fault-wrong-digest-at", "4", "--fault-malformed-at", "6:garbage"]
FAULTS += ["--fault-repeat-at", "5"]
PLANE_ENV = {
    "PPOS_LOG_FORMAT": "json",
    "PPOS_LOG_LEVEL": "info",
    "PPOS_SYNC_INTERVAL": "3s",
    "PPOS_HEARTBEAT_INTERVAL": "2s",
    "PPOS_HEARTBEAT_TTL": "6s",
    "PPOS_LOST_GRACE": "8s",
    "PPOS_NODE_SWEEP_INTERVAL": "2s",
    "PPOS_NODE_SWEEP_START_DELAY": "6s",
    "PPOS_RECONCILER_INTERVAL": "1s",
}


def say(text: str = "") -> None:
    print(text, flush=True)


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


class Demo:
    def __init__(self, home: Path, port: int) -> None:
        self.home = home
        self.data = home / "data"
        self.logs = home / "logs"
        self.token_file = home / "control-token"
        self.address = f"127.0.0.1:{port}"
        self.children: list[Child] = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PPOS_")}
        self.env["PPOS_DATA_DIR"] = str(self.data)  # embedded SQLite, fresh each run

    def spawn(self, name: str, argv: list[str], extra: dict[str, str] | None = None) -> Child:
        log = self.logs / f"{name}.log"
        with log.open("wb") as out:
            # Own session: Ctrl-C reaches the demo, which stops the children in order.
            popen = subprocess.Popen(
                argv,
                env={**self.env, **(extra or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        child = Child(name, popen, log)
        self.children.append(child)
        return child

    def run(self, argv: list[str]) -> str:
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"demo: {' '.join(argv[:3])} failed:\n{done.stderr[-3000:]}")
        return done.stdout

    def prepare(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        for stale in (self.data, self.logs, self.home / "agents", self.home / "records"):
            shutil.rmtree(stale, ignore_errors=True)
        self.logs.mkdir()
        if not self.token_file.exists():
            self.run(
                [
                    str(BIN / "ppos-control-plane"),
                    "token",
                    "generate",
                    "--out",
                    str(self.token_file),
                ]
            )
        # The plane's keys exist before anyone starts: the registries verify with them.
        (self.home / "jwks.json").write_text(
            self.run([str(BIN / "ppos-control-plane"), "keys", "jwks"])
        )

    def start_plane(self, regions: dict[str, int]) -> None:
        targets = ",".join(f"{r}=127.0.0.1:{p}" for r, p in regions.items())
        env = {
            **PLANE_ENV,
            "PPOS_LISTEN": self.address,
            "PPOS_CONTROL_TOKEN_FILE": str(self.token_file),
            "PPOS_SYNC_REGIONS": targets,
            "PPOS_GATEWAYS": targets,  # each simulator is its region's registry and gateway
        }
        plane = self.spawn("control-plane", [str(BIN / "ppos-control-plane"), "serve"], env)
        self.wait_healthy(plane)

    def operator(self) -> ControlPlane:
        config = load_config({}, address=self.address, token_file=self.token_file, timeout=20)
        return ControlPlane(config)

    def wait_healthy(self, plane: Child) -> None:
        with self.operator() as cp:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                plane.check()
                with contextlib.suppress(Exception):
                    if cp.health.check("", timeout=1) == "SERVING":
                        return
                time.sleep(0.3)
        raise SystemExit(f"demo: the control plane did not become healthy; see {self.logs}/")

    def start_portal(self, port: int) -> str:
        """The dashboard, on `port`, for this demo's plane; its URL once it answers."""
        argv = [str(BIN / "ppos-portal"), "--listen", f"127.0.0.1:{port}", "--plane", self.address]
        portal = self.spawn("portal", argv)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            portal.check()
            if not port_free(port):
                return f"http://127.0.0.1:{port}/"
            time.sleep(0.2)
        raise SystemExit(f"demo: the portal did not start; see {self.logs}/portal.log")

    def start_fleet(self, region: str, count: int, name: str) -> Child:
        argv = [str(BIN / "ppos-node-agent"), "--enroll", "--count", str(count)]
        argv += ["--state-dir", str(self.home / "agents" / name), "--region", region]
        argv += ["--image", world.IMAGE, "--digest", world.DIGEST, "--reimage-time", "3s"]
        argv += ["--fail-image", "*-broken*", "--cluster", f"{region}-a"]
        extra = {"PPOS_ADDRESS": self.address, "PPOS_CONTROL_TOKEN_FILE": str(self.token_file)}
        return self.spawn(f"agents-{name}", argv, extra)

    def start_registry(self, region: str, port: int, records: Path) -> None:
        argv = [str(BIN / "ppos-preflight-sim"), "--region", region]
        argv += ["--listen", f"127.0.0.1:{port}", "--jwks-file", str(self.home / "jwks.json")]
        argv += ["--records", str(records)]
        argv += ["--release-initial", "2", "--release-every", "4", "--release-batch", "1"]
        argv += FAULTS if region == "ap-south-1" else []
        self.spawn(f"sim-{region}", argv)

    def check_children(self) -> None:
        for child in self.children:
            if not child.name.startswith("agents-leaving"):
                child.check()

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def nodes_by_region(cp: ControlPlane, want: dict[str, int], demo: Demo) -> dict[str, list[str]]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        demo.check_children()
        nodes = cp.nodes.list_nodes().nodes
        found: dict[str, list[str]] = {}
        for node in nodes:
            found.setdefault(node.spec.region, []).append(node.node_id)
        if all(len(found.get(r, [])) >= n for r, n in want.items()):
            return found
        time.sleep(0.5)
    raise SystemExit(f"demo: the node agents did not register; see {demo.logs}/")


def story(demo: Demo, seconds: float) -> None:
    """Print what moved every few seconds; stop the leaving agents part-way."""
    started = time.monotonic()
    leaving = next(c for c in demo.children if c.name == "agents-leaving")
    with demo.operator() as cp:
        while (elapsed := time.monotonic() - started) < seconds:
            demo.check_children()
            if elapsed > 12 and leaving.popen.poll() is None:
                leaving.stop()
                say(f"-- stopped {LEAVING} us-east-1 node agents: nodes go NOT_READY then LOST")
            say(f"-- after {elapsed:.0f}s")
            for line in world.status_lines(cp):
                say(f"   {line}")
            time.sleep(8)


def where(demo: Demo, regions: dict[str, int], portal: str) -> None:
    # Relative to where the operator stands when the demo lives there (make demo: .demo).
    home = str(demo.home)
    if demo.home.is_relative_to(Path.cwd()):
        home = str(demo.home.relative_to(Path.cwd()))
    say("\nEverything is running:")
    say(f"  control plane      {demo.address} (SQLite in {home}/data, token {home}/control-token)")
    say(f"  dashboard portal   {portal} (sign in with the token in {home}/control-token)")
    for region, port in regions.items():
        say(f"  {region:<18} registry and gateway simulator on 127.0.0.1:{port}")
    say(f"  node agents        {home}/agents/ (identities), output in {home}/logs/agents-*.log")
    say(f"  logs               {home}/logs/")
    say("\nIn another shell (docs/operator-guide.md walks through the rest):")
    say('  export PATH="$PWD/.venv/bin:$PWD/node_modules/.bin:$PATH"')
    say(f"  export PPOS_ADDRESS={demo.address} PPOS_CONTROL_TOKEN_FILE={home}/control-token")
    for command in ("pposctl nodes list", "pposctl sync status", "pposctl decisions list"):
        say(f"  {command}")
    say("Ctrl-C stops everything.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=50051, help="the control plane's port")
    parser.add_argument("--dir", type=Path, default=ROOT / ".demo", help="where the demo lives")
    parser.add_argument(
        "--portal-port", type=int, default=8080, help="the dashboard's port (0: any free one)"
    )
    parser.add_argument("--story-seconds", type=float, default=45.0)
    args = parser.parse_args(argv)
    for port, what, variable in (
        (args.port, "control plane", "DEMO_PORT"),
        (args.portal_port, "portal", "DEMO_PORTAL_PORT"),
    ):
        if port and not port_free(port):
            print(
                f"demo: port {port} is taken (another demo or {what}?). Stop it, "
                f"or use another port: make demo {variable}=N",
                file=sys.stderr,
            )
            return EXIT_PORT_TAKEN
    demo = Demo(args.dir.resolve(), args.port)

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        demo.prepare()
        regions = {region: free_port() for region in REGIONS}
        demo.start_plane(regions)
        say(f"control plane serving on {demo.address}")
        portal = demo.start_portal(args.portal_port or free_port())
        say(f"dashboard portal serving on {portal}")
        with demo.operator() as cp:
            world.seed(cp)
            say("seeded: 4 partners, 3 tenants with queues, 3 routes, 4 governance policies")
            for region in REGIONS:
                demo.start_fleet(region, FLEET, region)
            demo.start_fleet("us-east-1", LEAVING, "leaving")
            want = dict.fromkeys(REGIONS, FLEET)
            want["us-east-1"] += LEAVING
            nodes = nodes_by_region(cp, want, demo)
        say(f"node agents registered: {', '.join(f'{r} {len(n)}' for r, n in nodes.items())}")
        records = demo.home / "records"
        for region, port in regions.items():
            fleet = sorted(nodes[region])[:FLEET]
            demo.start_registry(region, port, world.write_story(records, region, fleet))
        say("registries producing jobs, one every 4 s per region")
        where(demo, regions, portal)
        story(demo, args.story_seconds)
        say("-- the story is told; still serving (Ctrl-C stops everything)")
        while True:
            demo.check_children()
            time.sleep(1)
    except KeyboardInterrupt:
        say("\nstopping...")
    finally:
        demo.stop()
    say("stopped cleanly")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
