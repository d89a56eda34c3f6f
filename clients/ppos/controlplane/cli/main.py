"""`pposctl`: the operator's command line for the PrintPrice OS control plane.

    pposctl nodes list --region eu-west-1
    pposctl nodes cordon node_01... --reason 'disk errors'
    pposctl admin-jobs start health-sweep
    pposctl sync sweep start eu-west-1

Nouns then verbs, `--help` everywhere, tables for people and `-o json` for
scripts, exit codes per class of failure (see `pposctl --help`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

import grpc

from ppos.controlplane.cli import exitcodes, governance, misc, nodes, operations, policies
from ppos.controlplane.cli.app import (
    EXIT_CODES,
    Context,
    Parser,
    Tree,
    UsageError,
    common_options,
    help_stream,
)
from ppos.controlplane.client import ClientError, ConfigurationError, ControlPlaneError


def _methods_by_service() -> dict[str, str]:
    from ppos.controlplane.governance.v1 import governance_service_pb2
    from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2
    from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2

    services = {
        "governance": governance_service_pb2.DESCRIPTOR.services_by_name["GovernanceService"],
        "noderegistry": node_registry_service_pb2.DESCRIPTOR.services_by_name[
            "NodeRegistryService"
        ],
        "registrysync": registry_sync_service_pb2.DESCRIPTOR.services_by_name[
            "RegistrySyncService"
        ],
    }
    return {m.name: key for key, svc in services.items() for m in svc.methods}


SERVICE_OF_METHOD = _methods_by_service()

DESCRIPTION = """\
Operate the PrintPrice OS control plane: nodes, tenants, queues, routes,
policies, registry sync, admin jobs and the audit log.

The control token is read from PPOS_CONTROL_TOKEN_FILE (or --token-file FILE,
or PPOS_CONTROL_TOKEN), never from an argument. The address comes from
PPOS_ADDRESS or --address (default 127.0.0.1:50051); when the services run
apart, PPOS_GOVERNANCE_ADDRESS, PPOS_NODEREGISTRY_ADDRESS and
PPOS_REGISTRYSYNC_ADDRESS say where each one is."""


def build_parser() -> Parser:
    common = common_options()
    parser = Parser(
        prog="pposctl",
        description=DESCRIPTION,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    root = parser.add_subparsers(dest="noun", metavar="COMMAND", required=True, parser_class=Parser)
    tree = Tree(root, common)
    nodes.register(tree)
    governance.register(tree)
    policies.register(tree)
    operations.register(tree)
    misc.register(tree)
    parser.set_defaults(root_parser=parser)
    return parser


def _unavailable(ctx: Context, error: ControlPlaneError) -> str:
    service = SERVICE_OF_METHOD.get(error.method, "")
    address = ctx.config.address_of(service) if service else ctx.config.address
    tries = f" after {error.attempts} attempts" if error.attempts > 1 else ""
    return f"cannot reach the control plane at {address}{tries}: {error.message}"


def run(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run one command; returns its exit code (never raises for expected failures)."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    env = os.environ if environ is None else environ
    parser = build_parser()
    help_stream.set(stdout)
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        stderr.write(f"pposctl: error: {exc}\n")
        return exitcodes.USAGE
    except SystemExit as exc:  # --help, --version
        return int(exc.code or 0)
    ctx = Context(args, env, stdout, stderr)
    for warning in getattr(args, "deprecations", []):
        ctx.out.note(f"warning: {warning}")
    handler = getattr(args, "handler", None)
    if handler is None:
        stderr.write(f"pposctl: error: choose a command\nSee '{parser.prog} --help'.\n")
        return exitcodes.USAGE
    try:
        code = handler(ctx, args)
    except UsageError as exc:
        stderr.write(f"pposctl: error: {exc}\n")
        return exitcodes.USAGE
    except ConfigurationError as exc:
        stderr.write(f"pposctl: configuration error: {exc}\n")
        return exitcodes.CONFIG
    except ControlPlaneError as exc:
        if exc.code == grpc.StatusCode.UNAVAILABLE and not exc.details.reason:
            stderr.write(f"pposctl: {_unavailable(ctx, exc)}\n")
        else:
            stderr.write(exc.one_line() + "\n")
            for violation in exc.field_violations:
                stderr.write(f"  {violation.field}: {violation.description}\n")
        return exitcodes.for_status(exc.code)
    except ClientError as exc:  # pragma: no cover - every client error is one of the above
        stderr.write(f"pposctl: error: {exc}\n")
        return exitcodes.SERVER_ERROR
    except KeyboardInterrupt:
        stderr.write("\n")
        return exitcodes.INTERRUPTED
    except BrokenPipeError:  # `pposctl nodes list | head`
        return exitcodes.OK
    finally:
        ctx.close()
    return exitcodes.OK if code is None else int(code)


def main() -> None:
    """Console entry point."""
    code = run()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    raise SystemExit(code)


if __name__ == "__main__":
    main()
