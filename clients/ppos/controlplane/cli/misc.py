"""`pposctl health|jwks|whoami|config|completion|version`."""

from __future__ import annotations

import argparse
import json
from importlib import metadata

from ppos.controlplane.cli import exitcodes
from ppos.controlplane.cli.app import Context, Tree
from ppos.controlplane.cli.completion import bash_script, zsh_script
from ppos.controlplane.cli.output import Column
from ppos.controlplane.client import NotFoundError, UnavailableError
from ppos.controlplane.client.config import ENV_TOKEN, ENV_TOKEN_FILE, ClientConfig

SERVICES = {
    "governance": "ppos.controlplane.governance.v1.GovernanceService",
    "noderegistry": "ppos.controlplane.noderegistry.v1.NodeRegistryService",
    "registrysync": "ppos.controlplane.registrysync.v1.RegistrySyncService",
    "jwks": "ppos.controlplane.auth.v1.JwksService",
}


def health(ctx: Context, args: argparse.Namespace) -> int:
    """gRPC health of the server and each service (no token needed)."""
    names = args.services or ["", *SERVICES]
    rows = []
    worst = exitcodes.OK
    for name in names:
        full = SERVICES.get(name, name)
        try:
            status = ctx.cp.health.check(full)
        except NotFoundError:
            status = "NOT_HOSTED"
            if args.services:  # asked for it by name: that is a failure
                worst = exitcodes.NOT_SERVING
        except UnavailableError:
            if args.quiet:
                return exitcodes.UNAVAILABLE
            raise
        if status not in ("SERVING", "NOT_HOSTED"):
            worst = exitcodes.NOT_SERVING
        rows.append({"service": full or "(server)", "status": status})
    if args.quiet:
        return worst
    if ctx.out.is_json:
        ctx.out.console.print(json.dumps({"services": rows}, indent=2), markup=False)
    else:
        ctx.out.table(
            [Column("SERVICE", lambda r: r["service"]), Column("STATUS", lambda r: r["status"])],
            rows,
        )
    return worst


def jwks(ctx: Context, args: argparse.Namespace) -> None:
    reply = ctx.cp.jwks.get()
    if ctx.out.is_json:
        ctx.out.message(reply)
        return
    if args.raw:
        ctx.out.console.print(reply.jwks_json, markup=False, highlight=False, soft_wrap=True)
        return
    keys = json.loads(reply.jwks_json).get("keys", [])
    ctx.out.table(
        [
            Column("KID", lambda k: k.get("kid", "-")),
            Column("ALG", lambda k: k.get("alg", "-")),
            Column("CURVE", lambda k: k.get("crv", "-")),
            Column("USE", lambda k: k.get("use", "-")),
            Column("ACTIVE", lambda k: "yes" if k.get("kid") == reply.active_kid else "no"),
        ],
        keys,
    )
    ctx.out.note(f"cache for {reply.max_age_seconds}s")


def whoami(ctx: Context, args: argparse.Namespace) -> None:
    reply = ctx.cp.identity.who_am_i()
    if ctx.out.is_json:
        ctx.out.message(reply)
        return
    role = ctx.cp.identity.role_of(reply)
    ctx.out.console.print(f"{reply.actor}" + (f" (role {role})" if role else ""), markup=False)


def config_view(ctx: Context, args: argparse.Namespace) -> None:
    """Where calls go and where the token comes from (never the token itself)."""
    config = ctx.config
    token = config.token.source if config.token else f"none (set {ENV_TOKEN_FILE} or {ENV_TOKEN})"
    pairs = [
        ("Address", config.address),
        *[(f"Address of {name}", addr) for name, addr in sorted(config.service_addresses.items())],
        ("TLS", _tls_summary(config)),
        ("Token", token),
        ("Timeout", f"{config.timeout:g}s"),
        ("Retries", f"UNAVAILABLE up to {config.retry.max_attempts} attempts"),
    ]
    if ctx.out.is_json:
        ctx.out.console.print(json.dumps(dict(pairs), indent=2), markup=False)
    else:
        ctx.out.details(pairs)


def completion(ctx: Context, args: argparse.Namespace) -> None:
    parser = args.root_parser
    script = bash_script(parser) if args.shell == "bash" else zsh_script(parser)
    ctx.out.console.file.write(script)


def version(ctx: Context, args: argparse.Namespace) -> None:
    try:
        number = metadata.version("ppos-control-plane")
    except metadata.PackageNotFoundError:  # pragma: no cover - always installed with it
        number = "unknown"
    ctx.out.console.print(f"pposctl {number}", markup=False)


def register(tree: Tree) -> None:
    p = tree.root.add_parser(
        "health",
        help="gRPC health of the server and its services (no token needed)",
        description="gRPC health of the server and its services (no token needed). Exit 0 when "
        "every checked service is SERVING, 15 when one is not, 3 when unreachable.",
        parents=[tree.common],
    )
    p.add_argument(
        "services",
        nargs="*",
        metavar="SERVICE",
        help="governance, noderegistry, registrysync, jwks or a full name (default: all)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing; the exit code says")
    p.set_defaults(handler=health)
    p = tree.root.add_parser(
        "jwks", help="the public keys that verify PREFLIGHT_JWTs", parents=[tree.common]
    )
    p.add_argument("--raw", action="store_true", help="print the JWKS document as served")
    p.set_defaults(handler=jwks)
    p = tree.root.add_parser(
        "whoami",
        help="who the plane takes this credential to be, and its role",
        parents=[tree.common],
    )
    p.set_defaults(handler=whoami)
    config = tree.noun("config", "client configuration", default=config_view)
    tree.verb(config, "view", config_view, "where calls go and where the token comes from")
    p = tree.root.add_parser(
        "completion",
        help="shell completion script",
        description="Print a completion script. bash: "
        "source <(pposctl completion bash); zsh: "
        "source <(pposctl completion zsh)",
        parents=[tree.common],
    )
    p.add_argument("shell", choices=["bash", "zsh"], help="the shell to complete in")
    p.set_defaults(handler=completion)
    p = tree.root.add_parser("version", help="print the client version", parents=[tree.common])
    p.set_defaults(handler=version)


def _tls_summary(config: ClientConfig) -> str:
    if config.ca_file is None:
        return "no (plaintext)"
    if config.cert_file is None:
        return f"yes (CA {config.ca_file})"
    return f"mutual (CA {config.ca_file}, certificate {config.cert_file})"
