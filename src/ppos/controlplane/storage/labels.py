"""A label selector as a WHERE clause over a JSON labels column (PostgreSQL and SQLite)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, or_

from ppos.controlplane.core.selectors import LabelSelector


def selector_clause(selector: LabelSelector, labels_column: Any) -> ColumnElement[bool] | None:
    """The clause matching what `selector.matches` matches; None for an empty selector."""
    clauses: list[ColumnElement[bool]] = []
    for req in selector.requirements:
        element = labels_column[req.key].as_string()
        if req.op == "=":
            clauses.append(element == req.value)
        elif req.op == "!=":
            clauses.append(or_(element.is_(None), element != req.value))
        elif req.op == "exists":
            clauses.append(element.is_not(None))
        else:
            clauses.append(element.is_(None))
    return and_(*clauses) if clauses else None
