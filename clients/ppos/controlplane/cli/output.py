"""How results are shown: tables for people, the proto3 JSON mapping for scripts.

`-o table` (default) and `-o wide` print kubectl-like tables (on a pipe every
cell whole, one line per row, however wide the table); `-o json` prints
the RPC's response message in the canonical proto3 JSON mapping, the same
shape grpcurl and buf curl print (pages of a list merged into one message);
`-o name` prints one resource name per line for `xargs`. Watches print one
compact JSON message per line with `-o json`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table
from rich.text import Text

FORMATS = ("table", "wide", "json", "name")


@dataclass(frozen=True)
class Column:
    """One table column: header, how to get the cell, and whether only `-o wide` shows it."""

    header: str
    cell: Callable[[Any], str]
    wide: bool = False


def enum_name(enum_type: Any, value: int, prefix: str) -> str:
    """`READINESS_READY` -> `READY` (the prefix is the enum's own)."""
    try:
        name = str(enum_type.Name(value))
    except ValueError:
        return str(value)
    return name.removeprefix(prefix) if name != f"{prefix}UNSPECIFIED" else "-"


def to_json(message: Message, *, compact: bool = False) -> str:
    data = json_format.MessageToDict(message)
    return json.dumps(data, separators=(",", ":")) if compact else json.dumps(data, indent=2)


def when(stamp: timestamp_pb2.Timestamp, *, now: dt.datetime | None = None) -> str:
    """Age like kubectl: `42s`, `7m`, `3h`, `5d`; `-` when unset."""
    if not stamp.seconds and not stamp.nanos:
        return "-"
    now = now or dt.datetime.now(dt.UTC)
    seconds = int((now - stamp.ToDatetime(tzinfo=dt.UTC)).total_seconds())
    if seconds < 0:
        return "in " + _span(-seconds)
    return _span(seconds)


def span(value: Any) -> str:
    """A protobuf Duration as kubectl shows ages: `42s`, `7m`, `3h`, `5d`; `-` when unset."""
    if not value.seconds and not value.nanos:
        return "-"
    return _span(int(value.seconds))


def _span(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def timestamp(stamp: timestamp_pb2.Timestamp) -> str:
    if not stamp.seconds and not stamp.nanos:
        return "-"
    return stamp.ToDatetime(tzinfo=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def labels(mapping: Any) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(mapping.items())) or "-"


def human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{count}B"  # pragma: no cover - loop always returns


def make_console(stream: TextIO, *, color: bool | None = None) -> Console:
    """A console on `stream`: full width off a terminal, so tables never wrap for scripts."""
    terminal = stream.isatty()
    return Console(
        file=stream,
        force_terminal=terminal if color is None else color and terminal,
        no_color=color is False,
        width=None if terminal else 400,
        highlight=False,
        soft_wrap=not terminal,
    )


class Output:
    """Prints results in the chosen format."""

    def __init__(self, console: Console, err: Console, fmt: str = "table") -> None:
        self.console = console
        self.err = err
        self.format = fmt

    @property
    def is_json(self) -> bool:
        return self.format == "json"

    @property
    def interactive(self) -> bool:
        return self.console.is_terminal and not self.is_json

    def message(self, message: Message) -> None:
        """The whole response, for `-o json`."""
        self.console.print(to_json(message), markup=False, highlight=False, soft_wrap=True)

    def json_line(self, message: Message) -> None:
        self.console.print(
            to_json(message, compact=True), markup=False, highlight=False, soft_wrap=True
        )

    def table(self, columns: Sequence[Column], rows: Iterable[Any]) -> None:
        shown = [c for c in columns if not c.wide or self.format == "wide"]
        if not self.console.is_terminal:
            self._plain_table(shown, rows)
            return
        table = Table(
            box=None,
            pad_edge=False,
            show_edge=False,
            header_style="bold",
            collapse_padding=True,
            padding=(0, 3, 0, 0),
        )
        for column in shown:
            table.add_column(column.header, no_wrap=True, overflow="fold")
        count = 0
        for row in rows:
            table.add_row(*[Text(column.cell(row)) for column in shown])
            count += 1
        if count == 0:
            self.err.print("No resources found.")
            return
        self.console.print(table)

    def _plain_table(self, columns: Sequence[Column], rows: Iterable[Any]) -> None:
        """The table for a pipe: every cell whole, on one line per row, however wide
        (a terminal's table folds cells to fit; `awk` and `cut` need them whole)."""
        lines = [[c.header for c in columns]]
        lines += [[" ".join(c.cell(row).splitlines()) for c in columns] for row in rows]
        if len(lines) == 1:
            self.err.print("No resources found.")
            return
        widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
        text = "".join(
            "   ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            + "\n"
            for line in lines
        )
        self.console.file.write(text)

    def names(self, kind: str, names: Iterable[str]) -> None:
        for name in names:
            self.console.print(f"{kind}/{name}", markup=False, highlight=False)

    def show(
        self,
        message: Message,
        columns: Sequence[Column],
        rows: Iterable[Any],
        *,
        kind: str = "",
        name: Callable[[Any], str] | None = None,
    ) -> None:
        """`message` as JSON, `rows` as a table or as names, by the chosen format."""
        if self.format == "json":
            self.message(message)
        elif self.format == "name" and name is not None:
            self.names(kind, (name(row) for row in rows))
        else:
            self.table(columns, rows)

    def done(self, kind: str, name: str, verb: str, message: Message | None = None) -> None:
        """`node/node_x cordoned` (or the resource as JSON)."""
        if self.format == "json" and message is not None:
            self.message(message)
        elif self.format == "name":
            self.console.print(f"{kind}/{name}", markup=False, highlight=False)
        else:
            self.console.print(f"{kind}/{name} {verb}", markup=False, highlight=False)

    def details(self, pairs: Sequence[tuple[str, str]]) -> None:
        """`Key:   value` lines, like `kubectl describe`."""
        width = max((len(k) for k, _ in pairs), default=0) + 2
        for key, value in pairs:
            self.console.print(f"{key + ':':<{width}}{value}", markup=False, highlight=False)

    def note(self, text: str) -> None:
        """A remark for people, on stderr so it never mixes with data."""
        self.err.print(text, markup=False, highlight=False)
