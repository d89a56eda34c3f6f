"""Server side of the two-hop benchmarks: Relay calls Echo on the same server
over a loopback channel. Modes:

- `plain`: registered bare, plain channel (the baseline of both benchmarks);
- `auth`: the real edge guard and outbound PREFLIGHT_JWT minting, wired as the
  one-port server wires a peer it hosts itself (the edge knows the tokens its
  own loopback channel minted, with their claims: no parse, no signature check);
- `auth-full-verify`: the same, but the peer's edge verifies every signature,
  as a peer in another process must;
- `metered`: the RPC metrics wrapper, no authentication;
- `plain-tls`, `auth-tls`: `plain` and `auth` with mutual TLS on the listener
  and on the loopback channel of the peer hop (the plane's own TLS code:
  reloading server credentials, a client certificate on the channel out).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import Any

import grpc

from ppos.controlplane.core.logging import configure_logging
from ppos.controlplane.runtime.collector import settle_collector
from ppos.controlplane.runtime.observability import MeteredServer
from ppos.controlplane.security.access import AccessTable, MethodRule
from ppos.controlplane.security.authentication import EdgeAuthenticator
from ppos.controlplane.security.control_token import ControlToken
from ppos.controlplane.security.edge import EdgeGuard, GuardedServer
from ppos.controlplane.security.keys import KeyRing
from ppos.controlplane.security.outbound import open_channel
from ppos.controlplane.security.principal import PrincipalKind
from ppos.controlplane.security.self_minted import SelfMinted
from ppos.controlplane.security.tls import ClientTls, ServerTls
from ppos.controlplane.security.tokens import TokenMinter, TokenVerifier

FRONT = "ppos.bench.v1.FrontService"
BACK = "ppos.bench.v1.BackService"
RELAY = f"/{FRONT}/Relay"
ECHO = f"/{BACK}/Echo"
MODES = ("plain", "auth", "auth-full-verify", "metered", "plain-tls", "auth-tls")


def tls_files(tls_dir: Path) -> tuple[ServerTls, ClientTls]:
    """The listener's and the peer channel's identities (files written by the driver)."""
    return (
        ServerTls(tls_dir / "server.pem", tls_dir / "server-key.pem", tls_dir / "ca.pem"),
        ClientTls(tls_dir / "ca.pem", tls_dir / "server.pem", tls_dir / "server-key.pem"),
    )


def _authenticated(
    server: grpc.aio.Server,
    address: str,
    data_dir: Path,
    token: str,
    *,
    loopback: bool,
    tls: ClientTls | None,
) -> tuple[grpc.aio.Server, grpc.aio.Channel, SelfMinted | None]:
    keyring = KeyRing.from_directory(data_dir / "keys")
    minter = TokenMinter(keyring, issuer="ppos-control-plane")
    self_minted = SelfMinted() if loopback else None
    verifier = TokenVerifier(keyring, issuer="ppos-control-plane", self_minted=self_minted)
    access = AccessTable(
        [
            MethodRule(RELAY, FRONT, frozenset({PrincipalKind.OPERATOR})),
            MethodRule(ECHO, BACK, frozenset({PrincipalKind.PEER})),
        ]
    )
    edge = EdgeGuard(access, EdgeAuthenticator(ControlToken(token), verifier))
    channel = open_channel(
        address,
        minter,
        audience=BACK,
        subject="ppos.controlplane.bench",
        loopback=self_minted,
        tls=tls,
    )
    return GuardedServer(server, edge), channel, self_minted


async def serve(mode: str, port: int, data_dir: Path, token: str) -> None:
    address = f"127.0.0.1:{port}"
    server = grpc.aio.server()
    registrar: grpc.aio.Server = server
    self_minted: SelfMinted | None = None
    server_tls, client_tls = tls_files(data_dir / "tls") if mode.endswith("-tls") else (None, None)
    if mode.startswith("auth"):
        registrar, channel, self_minted = _authenticated(
            server, address, data_dir, token, loopback=mode != "auth-full-verify", tls=client_tls
        )
    else:
        if mode == "metered":
            registrar = MeteredServer(server)
        if client_tls is not None:
            channel = grpc.aio.secure_channel(address, client_tls.credentials())
        else:
            channel = grpc.aio.insecure_channel(address)
    echo_call = channel.unary_unary(ECHO)

    async def relay(request: bytes, context: Any) -> bytes:
        reply: bytes = await echo_call(request, timeout=10)
        return reply

    async def echo(request: bytes, context: Any) -> bytes:
        return request

    registrar.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                FRONT, {"Relay": grpc.unary_unary_rpc_method_handler(relay)}
            ),
            grpc.method_handlers_generic_handler(
                BACK, {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
            ),
        )
    )
    if server_tls is not None:
        server.add_secure_port(address, server_tls.credentials())
    else:
        server.add_insecure_port(address)
    await server.start()
    settle_collector()  # as the real server does once started (every mode alike)
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)
    await channel.close()
    # How many peer tokens the edge knew as its own: the driver checks the mode
    # measured what it says (all of them in `auth`, none elsewhere).
    recognised = 0 if self_minted is None else self_minted.recognised
    print(f"recognised {recognised}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--token-file", type=Path, required=True)
    args = parser.parse_args()
    token = args.token_file.read_text().strip()
    configure_logging(level="info", fmt="json")  # as in production: per-call debug lines filtered
    asyncio.run(serve(args.mode, args.port, args.data_dir, token))


if __name__ == "__main__":
    main()
