"""`ppos-node-agent`: run one node agent, or many in one process (`--count N`).

    # a real node: the token its operator handed over, its identity kept between runs
    ppos-node-agent --enrollment-token-file node-1.enroll --state-dir /var/lib/ppos-agent \\
        --region eu-west-1 --image registry.example/engine:15.1 --digest sha256:...

    # a simulated fleet: the agent asks for its own enrollments with the control token
    ppos-node-agent --enroll --count 20 --state-dir .demo/agents/eu --region eu-west-1 ...

Output: one line per thing that happened to a node (enrolled, registered,
readiness changes, re-image progress and outcome, credential renewals,
outages). SIGINT or SIGTERM (or `--duration`) stops every agent; their nodes
then turn NOT_READY and LOST as their heartbeats age.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ppos.controlplane.client import ClientError, ControlPlane, load_config
from ppos.controlplane.client.config import parse_seconds
from ppos.nodeagent.agent import AgentOptions, NodeAgent
from ppos.nodeagent.identity import IdentityStore

EXIT_CONFIG = 2


def _duration(text: str) -> float:
    try:
        return parse_seconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppos-node-agent",
        description="Reference worker-node agent of the PrintPrice OS control plane.",
    )
    parser.add_argument("-a", "--address", help="control plane host:port ($PPOS_ADDRESS)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--enrollment-token-file",
        type=Path,
        help="file holding one enrollment token per agent, one per line (from "
        "`pposctl enrollments create --token-out FILE`)",
    )
    source.add_argument(
        "--enroll",
        action="store_true",
        help="create the enrollments with the control token ($PPOS_CONTROL_TOKEN_FILE or "
        "--token-file): for simulated fleets",
    )
    parser.add_argument("--token-file", type=Path, help="control token file, for --enroll")
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="keep each agent's node id and credential here (0600) so a restarted agent "
        "carries on as the same node",
    )
    parser.add_argument("--count", type=int, default=1, help="agents to run in this process")
    parser.add_argument("--region", required=True)
    parser.add_argument("--cluster", default="")
    parser.add_argument("--image", required=True, help="container image the node runs")
    parser.add_argument("--digest", default="", help="its sha256: digest")
    parser.add_argument("--capacity", type=int, default=4, help="job slots offered")
    parser.add_argument("-l", "--label", type=_label, action="append", default=[])
    parser.add_argument("--hostname", default="")
    parser.add_argument(
        "--reimage-time", type=_duration, default=3.0, help="how long a simulated re-image takes"
    )
    parser.add_argument(
        "--fail-image",
        action="append",
        default=[],
        metavar="PATTERN",
        help="re-images to images matching this shell pattern fail (simulated), e.g. '*:broken*'",
    )
    parser.add_argument(
        "--renew-every",
        type=_duration,
        help="renew the node credential this often (default: at half its lifetime)",
    )
    parser.add_argument(
        "--heartbeat-interval", type=_duration, help="instead of the interval the plane asks for"
    )
    parser.add_argument("--max-backoff", type=_duration, default=10.0)
    parser.add_argument(
        "--not-ready-file",
        type=Path,
        help="while this file exists the node reports NOT_READY, the file's text as the reason",
    )
    parser.add_argument("--timeout", type=_duration, default=10.0, help="deadline of each call")
    parser.add_argument("--ca-file", type=Path, help="PEM CA bundle: TLS ($PPOS_CA_FILE)")
    parser.add_argument(
        "--cert-file", type=Path, help="client certificate, mutual TLS ($PPOS_CERT_FILE)"
    )
    parser.add_argument("--key-file", type=Path, help="its private key ($PPOS_KEY_FILE)")
    parser.add_argument("--duration", type=_duration, help="stop after this long")
    return parser


def _token_source(args: argparse.Namespace, cp: ControlPlane) -> Callable[[int], str] | None:
    """How agent number i gets an enrollment token, when it has no identity yet."""
    if args.enrollment_token_file is not None:
        try:
            lines = args.enrollment_token_file.read_text().split()
        except OSError as exc:
            raise ClientError(f"cannot read {args.enrollment_token_file}: {exc.strerror}") from None
        return lambda index: lines[index] if index < len(lines) else ""
    if args.enroll:
        cp.config.require_token()
        labels = dict(args.label)

        def create(index: int) -> str:
            reply = cp.nodes.create_enrollment(args.region, cluster=args.cluster, labels=labels)
            return reply.enrollment_token

        return create
    return None


def _agents(args: argparse.Namespace, cp: ControlPlane, stop: threading.Event) -> list[NodeAgent]:
    tokens = _token_source(args, cp)
    lock = threading.Lock()

    def say(text: str) -> None:
        with lock:
            print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)

    options = AgentOptions(
        region=args.region,
        image=args.image,
        digest=args.digest,
        cluster=args.cluster,
        capacity_slots=args.capacity,
        labels=dict(args.label),
        hostname=args.hostname,
        reimage_seconds=args.reimage_time,
        fail_images=tuple(args.fail_image),
        renew_every=args.renew_every,
        heartbeat_interval=args.heartbeat_interval,
        max_backoff=args.max_backoff,
        not_ready_file=args.not_ready_file,
    )
    agents = []
    for index in range(args.count):
        path = args.state_dir / f"agent-{index}.json" if args.state_dir else None
        token = (lambda i=index: tokens(i)) if tokens is not None else None
        agents.append(
            NodeAgent(
                cp.node_agent(),
                options,
                store=IdentityStore(path),
                enrollment_token=token,
                say=say,
                stop=stop,
            )
        )
    return agents


def run(args: argparse.Namespace, stop: threading.Event) -> int:
    if args.count < 1:
        raise ClientError("--count must be at least 1")
    config = load_config(
        address=args.address,
        token_file=args.token_file,
        timeout=args.timeout,
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.key_file,
    )
    with ControlPlane(config) as cp:
        agents = _agents(args, cp, stop)
        results: list[int] = []
        threads = [
            threading.Thread(target=lambda a=agent: results.append(a.run()), daemon=True)
            for agent in agents
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + args.duration if args.duration else None
        while any(thread.is_alive() for thread in threads):
            if deadline is not None and time.monotonic() >= deadline:
                stop.set()
            for thread in threads:
                thread.join(0.2)
        return max(results, default=0)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        return run(args, stop)
    except ClientError as exc:
        print(f"ppos-node-agent: {exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    raise SystemExit(main())
