"""Named operators, composed: the edge's lookup over the database, and the
`ppos-control-plane operators add|list|rotate|revoke` commands."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ppos.controlplane.core.settings import ConfigError
from ppos.controlplane.runtime.modules import Settings
from ppos.controlplane.security.operators import (
    ROLES,
    OperatorIdentity,
    credential_sha256,
    generate_operator_credential,
    operator_name_problem,
)
from ppos.controlplane.storage import migrate
from ppos.controlplane.storage import operators as store
from ppos.controlplane.storage.database import Database


class StoredOperatorLookup:
    """security.operators.OperatorLookup over the database (one indexed read)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def operator_by_credential(self, credential_sha256: str) -> OperatorIdentity | None:
        found = await self._db.read(
            lambda session: store.operator_by_credential(session, credential_sha256)
        )
        return None if found is None else OperatorIdentity(*found)


def add_operator_arguments(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "operators",
        allow_abbrev=False,
        help="named operators: add, list, rotate or revoke a credential with a role",
    )
    parser.add_argument("action", choices=["add", "list", "rotate", "revoke"])
    parser.add_argument("name", nargs="?", help="the operator's name (add, rotate, revoke)")
    parser.add_argument(
        "--role", choices=sorted(ROLES), help="add: viewer, operator or admin (required)"
    )
    parser.add_argument(
        "--out", type=Path, help="add, rotate: write the credential to this new 0600 file"
    )
    return parser


def _deliver(credential: str, out: Path | None, name: str) -> None:
    """The credential, once: into a new 0600 file, or on stdout."""
    if out is None:
        print(credential)
        return
    out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(credential + "\n")
    print(f"credential of {name} written to {out} (mode 0600)", file=sys.stderr)


def run_operators(settings: Settings, args: argparse.Namespace) -> int:
    """One `operators` action against the configured database (already migrated)."""
    action, name = args.action, args.name
    if action != "list":
        if not name:
            raise ConfigError(f"operators {action}: give the operator's NAME")
        problem = operator_name_problem(name)
        if problem:
            raise ConfigError(f"operator name {name!r}: {problem}")
    if action == "add" and args.role is None:
        raise ConfigError("operators add: --role viewer|operator|admin is required")
    if args.out is not None and args.out.exists():
        raise ConfigError(f"{args.out} exists; remove it first or choose another file")
    db = Database(settings.server.resolved_database_url, pool_size=1)
    try:
        if migrate.pending(db.read_engine):  # the schema is the servers' to change
            raise ConfigError("the database is not migrated: run `ppos-control-plane migrate`")
        credential = generate_operator_credential()
        digest = credential_sha256(credential)
        try:
            if action == "list":
                _print_table(db.read_sync(store.list_operators))
                return 0
            if action == "add":
                db.write_sync(lambda s: store.add_operator(s, name, ROLES[args.role], digest))
            elif action == "rotate":
                db.write_sync(lambda s: store.rotate_operator(s, name, digest))
            else:
                db.write_sync(lambda s: store.revoke_operator(s, name))
                print(f"operator {name} revoked", file=sys.stderr)
                return 0
        except store.OperatorConflict as exc:
            raise ConfigError(str(exc)) from None
    finally:
        db.close()
    _deliver(credential, args.out, name)
    return 0


def _print_table(rows: list[store.StoredOperator]) -> None:
    lines = [("NAME", "ROLE", "STATE", "CREDENTIAL ISSUED")]
    for row in rows:
        state = "revoked" if row.revoked_at else "active"
        issued = row.credential_issued_at.isoformat(timespec="seconds")
        lines.append((row.name, row.role.label, state, issued))
    widths = [max(len(line[i]) for line in lines) for i in range(3)]
    for name, role, state, issued in lines:
        cells = (name.ljust(widths[0]), role.ljust(widths[1]), state.ljust(widths[2]), issued)
        print("  ".join(cells))
