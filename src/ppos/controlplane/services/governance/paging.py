"""Keyset paging of governance's List RPCs: one page window, one token rule."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.sql.elements import ColumnElement

from ppos.controlplane.core.pagination import Listing, PageTokens, Position, page_size

R = TypeVar("R")


def after_position(
    columns: Sequence[Any], after: Position, *, newest_first: bool = False
) -> ColumnElement[bool]:
    """Rows after `after` in the order of `columns` (descending when newest first):
    (a, b) > (x, y) is a > x, or a = x and b > y; the same for more columns."""
    column, *rest = columns
    value, *later = after
    beyond: ColumnElement[bool] = column < value if newest_first else column > value
    if not rest:
        return beyond
    return or_(
        beyond, and_(column == value, after_position(rest, tuple(later), newest_first=newest_first))
    )


class Page:
    """A keyset page request: its size and the position after which it continues.

    The position comes from a page token sealed by `tokens` for this listing
    and these filters (anything else is refused as INVALID_ARGUMENT). A row's
    position is its values of the listing's fields, so the same names are the
    columns the page is ordered by.
    """

    def __init__(
        self,
        tokens: PageTokens,
        listing: Listing,
        size: int,
        token: str,
        filters: Mapping[str, Any],
    ) -> None:
        self._tokens = tokens
        self._listing = listing
        self.size = page_size(size)
        self._filters = dict(filters)
        self.after: Position | None = tokens.read(listing, self._filters, token)

    def window(self, query: Select[R], *columns: Any, newest_first: bool = False) -> Select[R]:
        """`query` narrowed to this page: after its position in the order of
        `columns` (the listing's fields), at most size + 1 rows (one more says more follow)."""
        if self.after is not None:
            query = query.where(after_position(columns, self.after, newest_first=newest_first))
        order = [column.desc() for column in columns] if newest_first else list(columns)
        return query.order_by(*order).limit(self.size + 1)

    def position(self, row: Any) -> Position:
        """The row's keyset position: its values of the listing's fields."""
        return tuple(getattr(row, field.name) for field in self._listing.fields)

    def next_token(self, rows: list[Any], key: Callable[[Any], Position] | None = None) -> str:
        """Token after the last row of the page when more may follow (rows has size+1 items)."""
        if len(rows) <= self.size:
            return ""
        last = rows[self.size - 1]
        return self._tokens.issue(
            self._listing, self._filters, key(last) if key else self.position(last)
        )
