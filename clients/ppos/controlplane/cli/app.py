"""The command tree's plumbing: global flags, the per-command context, argument types."""

from __future__ import annotations

import argparse
import contextvars
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from ppos.controlplane.cli import exitcodes
from ppos.controlplane.cli.output import FORMATS, Output, make_console
from ppos.controlplane.client import ControlPlane
from ppos.controlplane.client.config import ClientConfig, load_config, parse_seconds

Handler = Callable[["Context", argparse.Namespace], "int | None"]


class UsageError(Exception):
    """A command line the tool cannot act on (exit 1)."""


# Where --help goes: the stdout of the running command (tests run commands in-process).
help_stream: contextvars.ContextVar[TextIO | None] = contextvars.ContextVar(
    "help_stream", default=None
)


class Parser(argparse.ArgumentParser):
    """argparse with usage errors on exit code 1 and a pointer to --help."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}\nSee '{self.prog} --help'.")

    def _print_message(self, message: str, file: Any = None) -> None:
        stream = help_stream.get()
        if stream is not None and file in (None, sys.stdout):
            stream.write(message)
            return
        super()._print_message(message, file)


class DeprecatedSpelling(argparse.Action):
    """An old spelling of a flag, kept working but hidden: it stores into the new
    flag's destination and leaves a warning that `run` prints on stderr."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, instead: str, **kwargs: Any):
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)
        self.instead = instead

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        deprecated(namespace, f"{option_string} is deprecated; use {self.instead}")


class IgnoredFlag(argparse.Action):
    """A flag of earlier releases that no longer does anything: accepted, hidden,
    and a warning says so."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        deprecated(
            namespace,
            f"{option_string} is ignored: the audit log names the holder of the credential "
            "(a named operator, or break-glass for the control token)",
        )


def deprecated(args: argparse.Namespace, text: str) -> None:
    """Record a deprecation warning for `run` to print on stderr (once)."""
    warnings: list[str] = getattr(args, "deprecations", [])
    if text not in warnings:
        args.deprecations = [*warnings, text]


def old_spelling(
    parser: argparse.ArgumentParser, old: str, new: str, *, dest: str, **kwargs: Any
) -> None:
    """Accept `old` as a hidden, deprecated spelling of the flag `new`."""
    parser.add_argument(
        old, dest=dest, action=DeprecatedSpelling, instead=new, default=argparse.SUPPRESS, **kwargs
    )


def common_options() -> Parser:
    """Flags every command takes, before or after the verb (kubectl style)."""
    common = Parser(add_help=False)
    group = common.add_argument_group("global options")
    sup = argparse.SUPPRESS
    group.add_argument(
        "-o", "--output", choices=FORMATS, default=sup, help="output format (default: table)"
    )
    group.add_argument(
        "-a",
        "--address",
        default=sup,
        metavar="HOST:PORT",
        help="control plane address [env PPOS_ADDRESS, default 127.0.0.1:50051]",
    )
    group.add_argument(
        "--token-file",
        type=Path,
        default=sup,
        metavar="FILE",
        help="file holding the control token [env PPOS_CONTROL_TOKEN_FILE or PPOS_CONTROL_TOKEN; "
        "never pass the token itself as an argument]",
    )
    group.add_argument(
        "--timeout",
        type=duration,
        default=sup,
        metavar="DURATION",
        help="deadline of each call, retries included [env PPOS_TIMEOUT, default 30s]",
    )
    group.add_argument(  # the audit log names the credential's holder, not a flag
        "--operator", action=IgnoredFlag, default=sup, help=argparse.SUPPRESS
    )
    group.add_argument(
        "--ca-file",
        type=Path,
        default=sup,
        metavar="FILE",
        help="PEM CA bundle: connect with TLS [env PPOS_CA_FILE]",
    )
    group.add_argument(
        "--cert-file",
        type=Path,
        default=sup,
        metavar="FILE",
        help="PEM client certificate, for mutual TLS [env PPOS_CERT_FILE]",
    )
    group.add_argument(
        "--key-file",
        type=Path,
        default=sup,
        metavar="FILE",
        help="the client certificate's private key [env PPOS_KEY_FILE]",
    )
    group.add_argument("--no-color", action="store_true", default=sup, help="plain output")
    return common


class Context:
    """What a command handler needs: the client (made on first use) and the output."""

    def __init__(
        self,
        args: argparse.Namespace,
        environ: Mapping[str, str],
        stdout: TextIO,
        stderr: TextIO,
    ) -> None:
        self.args = args
        self.environ = environ
        color = False if getattr(args, "no_color", False) or "NO_COLOR" in environ else None
        self.out = Output(
            make_console(stdout, color=color),
            make_console(stderr, color=color),
            getattr(args, "output", "table"),
        )
        self._config: ClientConfig | None = None
        self._plane: ControlPlane | None = None

    @property
    def config(self) -> ClientConfig:
        if self._config is None:
            args = self.args
            self._config = load_config(
                self.environ,
                address=getattr(args, "address", None),
                token_file=getattr(args, "token_file", None),
                timeout=getattr(args, "timeout", None),
                ca_file=getattr(args, "ca_file", None),
                cert_file=getattr(args, "cert_file", None),
                key_file=getattr(args, "key_file", None),
            )
            for warning in self._config.warnings:
                self.out.note(f"warning: {warning}")
        return self._config

    @property
    def cp(self) -> ControlPlane:
        if self._plane is None:
            self._plane = ControlPlane(self.config)
        return self._plane

    def close(self) -> None:
        if self._plane is not None:
            self._plane.close()


class Tree:
    """Builds nouns and verbs with the shared flags and help layout."""

    def __init__(self, root: argparse._SubParsersAction[Parser], common: Parser) -> None:
        self.root = root
        self.common = common

    def noun(
        self, name: str, help: str, *, aliases: Sequence[str] = (), default: Handler | None = None
    ) -> argparse._SubParsersAction[Parser]:
        parser = self.root.add_parser(
            name,
            help=help,
            description=help,
            aliases=list(aliases),
            parents=[self.common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.set_defaults(handler=default, noun_parser=parser)
        return parser.add_subparsers(
            dest="verb", metavar="VERB", required=default is None, parser_class=Parser
        )

    def verb(
        self,
        verbs: argparse._SubParsersAction[Parser],
        name: str,
        handler: Handler,
        help: str,
        *,
        aliases: Sequence[str] = (),
        examples: str = "",
    ) -> Parser:
        parser = verbs.add_parser(
            name,
            help=help,
            description=help,
            aliases=list(aliases),
            parents=[self.common],
            epilog=f"examples:\n{examples}" if examples else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.set_defaults(handler=handler)
        return parser


# -- argument types ---------------------------------------------------------------


def duration(text: str) -> float:
    try:
        return parse_seconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def enum_parser(enum_type: Any, prefix: str) -> Callable[[str], Any]:
    """`ready` / `not-ready` / `READINESS_READY` -> the enum value; lists choices on error."""
    names: list[str] = list(enum_type.keys())
    choices = [n.removeprefix(prefix) for n in names if not n.endswith("UNSPECIFIED")]

    def parse(text: str) -> int:
        name = re.sub(r"[-\s]", "_", text.strip().upper())
        if not name.startswith(prefix):
            name = prefix + name
        try:
            value = int(enum_type.Value(name))
        except ValueError:
            options = ", ".join(c.lower().replace("_", "-") for c in choices)
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {options}") from None
        if name.endswith("UNSPECIFIED"):
            raise argparse.ArgumentTypeError(f"{text!r} is not a value")
        return value

    parse.__name__ = prefix.lower().rstrip("_") or "value"
    return parse


def enum_list(enum_type: Any, prefix: str) -> Callable[[str], list[Any]]:
    """Comma-separated enum values."""
    one = enum_parser(enum_type, prefix)

    def parse(text: str) -> list[Any]:
        return [one(item) for item in text.split(",") if item.strip()]

    parse.__name__ = one.__name__
    return parse


def limit_flag(parser: argparse.ArgumentParser, what: str = "items") -> None:
    """`--limit N` of every list: all pages are merged unless it is given."""
    parser.add_argument(
        "--limit",
        type=int,
        default=0,
        metavar="N",
        help=f"show at most N {what} (default: all, every page merged)",
    )


def request_id_flag(
    parser: argparse.ArgumentParser, what: str = "repeat-safe id: the same id does it once"
) -> None:
    """`--request-id ID` of every write that can be repeated safely."""
    parser.add_argument(
        "--request-id", default=None, metavar="ID", help=f"{what} (default: a fresh one)"
    )


def flatten(values: Sequence[Sequence[Any]] | None) -> list[Any]:
    return [v for group in values or () for v in group]


def confirm_reason(reason: str | None) -> str:
    if not reason or not reason.strip():
        raise UsageError("--reason is required: destructive actions say why")
    return reason


def stdin_is_tty() -> bool:
    return sys.stdin.isatty()


EXIT_CODES = exitcodes.epilog()
