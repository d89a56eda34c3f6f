"""A prepared read's SELECT compiled for one dialect: its SQL, how a read's values
fill its parameters, and how a raw row becomes a named tuple (and, through
`read_memo`, what it was made into)."""

from __future__ import annotations

import json
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import JSON, Select
from sqlalchemy.engine import Dialect

from ppos.controlplane.storage.read_memo import Convert, ConvertedRows

Processor = Callable[[Any], Any] | None


class CompiledRead:
    """A statement's SQL for one dialect, its parameter order and row maker."""

    __slots__ = (
        "_binds",
        "_compiled",
        "_conversions",
        "_make",
        "_memo",
        "_names",
        "_positional",
        "sql",
    )

    def __init__(
        self, statement: Select[Any], dialect: Dialect, convert: Convert | None, memo_size: int
    ) -> None:
        compiled = statement.compile(dialect=dialect)
        self._compiled = compiled
        self.sql = str(compiled)
        self._positional = bool(dialect.positional)
        self._binds = _binds(compiled, self._positional)
        # The parameters' names: in the SQL's order (positional), else as _binds has them.
        self._names: tuple[str, ...] = (
            tuple(compiled.positiontup or ())
            if self._positional or self._binds is None
            else tuple(compiled.bind_names.values())
        )
        columns = list(statement.selected_columns)
        processors: list[Processor] = [
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        ]
        if dialect.name == "postgresql":  # our connections leave JSON as text (keep_json_text)
            processors = [
                _parse_json if isinstance(column.type, JSON) and process is None else process
                for column, process in zip(columns, processors, strict=True)
            ]
        # Only the columns that need converting are visited for each row.
        self._conversions = tuple(
            (index, process) for index, process in enumerate(processors) if process is not None
        )
        fields = namedtuple("Read", [column.key for column in columns])  # type: ignore[misc]
        self._make: Callable[[Any], Any] = fields._make
        json_columns = tuple(
            index for index, column in enumerate(columns) if isinstance(column.type, JSON)
        )
        self._memo = None if convert is None else ConvertedRows(convert, memo_size, json_columns)

    def parameters(self, values: Mapping[str, Any]) -> Any:
        """The driver's parameters: by position (SQLite) or by name (psycopg)."""
        binds = self._binds
        if binds is None:  # a statement _binds does not know how to fill
            params = self._compiled.construct_params(dict(values))
            return tuple(params[name] for name in self._names) if self._positional else params
        try:
            if self._positional:
                return tuple(
                    [values[key] if must else values.get(key, fixed) for key, fixed, must in binds]
                )
            return {
                name: values[key] if must else values.get(key, fixed)
                for name, (key, fixed, must) in zip(self._names, binds)  # noqa: B905 - one length
            }
        except KeyError:  # a value missing: SQLAlchemy's own error names it
            self._compiled.construct_params(dict(values))
            raise

    def row(self, raw: Any) -> Any:
        values = list(raw)
        for index, process in self._conversions:
            values[index] = process(values[index])
        return self._make(values)

    def converted(self, raw_rows: Sequence[Any]) -> list[Any]:
        """What `convert` makes of each row, kept by raw row (see `storage.read_memo`)."""
        assert self._memo is not None, "a read converted must be given `convert`"
        return self._memo.products(raw_rows, self.row)


def _binds(compiled: Any, positional: bool) -> tuple[tuple[str, Any, bool], ...] | None:
    """How to fill a compiled statement's parameters, worked out once: for each
    (in the SQL's order when positional, else in `bind_names`' order), the key
    of the value a read gives, the value fixed in the statement (a literal's)
    and whether a read must give one. What `construct_params` works out on every
    call, at a tenth of a short read's time; None for a statement that needs
    more (expanding or computed values, escaped names), which goes through
    `construct_params`."""
    if (
        compiled._render_postcompile
        or compiled.post_compile_params
        or compiled.literal_execute_params
        or compiled.escaped_bind_names
    ):
        return None
    by_name = {name: bindparam for bindparam, name in compiled.bind_names.items()}
    if any(bindparam.callable is not None for bindparam in by_name.values()):
        return None
    names = compiled.positiontup or () if positional else by_name
    return tuple(
        (by_name[name].key, by_name[name].value, bool(by_name[name].required)) for name in names
    )


def _parse_json(value: bytes | None) -> Any:
    return None if value is None else json.loads(value)
