"""`ppos-portal`: the dashboard portal alone, against a control plane near or remote.

    ppos-portal --listen 127.0.0.1:8080 --plane 127.0.0.1:50051

Operators sign in with their own credential in the browser; the portal itself holds
none. Environment: PPOS_PORTAL_LISTEN, PPOS_ADDRESS, PPOS_CA_FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

import uvloop

from ppos.portal.app import start_portal
from ppos.portal.settings import PortalSettings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppos-portal", description="The administrative dashboard portal of the control plane."
    )
    env = os.environ
    parser.add_argument(
        "--listen",
        default=env.get("PPOS_PORTAL_LISTEN", "127.0.0.1:8080"),
        help="host:port to serve on (default %(default)s)",
    )
    parser.add_argument(
        "--plane",
        default=env.get("PPOS_ADDRESS", "127.0.0.1:50051"),
        help="host:port of the control plane's gRPC server (default %(default)s)",
    )
    parser.add_argument(
        "--plane-ca-file",
        type=Path,
        default=Path(env["PPOS_CA_FILE"]) if env.get("PPOS_CA_FILE") else None,
        help="CA bundle of the plane's TLS certificate (plaintext when absent)",
    )
    parser.add_argument(
        "--plane-cert-file",
        type=Path,
        default=Path(env["PPOS_CERT_FILE"]) if env.get("PPOS_CERT_FILE") else None,
        help="client certificate presented to the plane (mutual TLS)",
    )
    parser.add_argument(
        "--plane-key-file",
        type=Path,
        default=Path(env["PPOS_KEY_FILE"]) if env.get("PPOS_KEY_FILE") else None,
        help="the client certificate's private key",
    )
    parser.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate")
    parser.add_argument("--tls-key", type=Path, help="the certificate's private key")
    parser.add_argument(
        "--secure-cookies",
        action="store_true",
        help="mark cookies Secure (implied by --tls-cert; use behind a TLS proxy)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=1800.0,
        metavar="SECONDS",
        help="a session ends after this long without a request (default %(default)s)",
    )
    parser.add_argument(
        "--session-lifetime",
        type=float,
        default=43200.0,
        metavar="SECONDS",
        help="a session ends this long after sign-in (default %(default)s)",
    )
    return parser


async def run(args: argparse.Namespace) -> None:
    settings = PortalSettings(
        plane_ca_file=args.plane_ca_file,
        plane_cert_file=args.plane_cert_file,
        plane_key_file=args.plane_key_file,
        idle_seconds=args.idle_timeout,
        absolute_seconds=args.session_lifetime,
        secure_cookies=args.secure_cookies,
    )
    running = await start_portal(
        args.listen, args.plane, settings=settings, tls_cert=args.tls_cert, tls_key=args.tls_key
    )
    print(f"ppos-portal: serving {running.url} for the plane at {args.plane}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await running.stop()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        print("ppos-portal: give --tls-cert and --tls-key together", file=sys.stderr)
        return 2
    if (args.plane_cert_file is None) != (args.plane_key_file is None):
        print("ppos-portal: give --plane-cert-file and --plane-key-file together", file=sys.stderr)
        return 2
    if args.plane_cert_file is not None and args.plane_ca_file is None:
        print("ppos-portal: --plane-cert-file needs --plane-ca-file", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # libuv's loop, as the plane and uvicorn.run use: less loop time per event sent to a tab.
    uvloop.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
