"""What a prepared read's rows were made into, kept by each raw row.

A read may name what each row is made into (`convert`, e.g. a reply's
message): `QuickReads.converted` then keeps each product by the row's raw
column values as the driver returned them, for this read and dialect only,
so the same stored row is converted once, however often it is read. Our
PostgreSQL connections leave JSON values as their text (`keep_json_text`),
parsed by the row maker, so the key is the text and a row seen before is not
parsed at all (a JSON value a driver did parse is keyed by its canonical
text). The key is the whole row, so a row that changed in any column is
converted anew; at most `size` products are kept, the oldest dropped first.
Products are shared: callers copy them into their replies and never change them.

The rows a driver returned are never changed either, and a SQLite read whose
database did not change hands back the very list it returned before
(`storage.sqlite_results`): so the products of the last rows made into
products are kept with them, and the same list asked again gets the same list
of products without a key made or looked up per row (a page of ten tenants
read again and again, the hottest list).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

Convert = Callable[[Any], Any]
_TEXT = (str, bytes, type(None))


class ConvertedRows:
    """Products of `convert` by raw row, at most `size` of them."""

    __slots__ = ("_convert", "_json_columns", "_last", "_lock", "_memo", "_size")

    def __init__(self, convert: Convert, size: int, json_columns: tuple[int, ...]) -> None:
        self._convert = convert
        self._size = size
        # Columns whose raw value may be a parsed JSON document (unhashable).
        self._json_columns = json_columns
        self._memo: dict[Any, Any] = {}
        # A statement is shared by every loop and thread of the process (tests run
        # several): dropping the oldest while another thread adds would fail.
        self._lock = threading.Lock()
        # The last rows made into products, and those products: one tuple, so a
        # thread reading it never pairs one call's rows with another's products.
        # Holding the rows keeps their identity from being reused.
        self._last: tuple[Sequence[Any], list[Any]] = ((), [])

    def products(self, raw_rows: Sequence[Any], make_row: Callable[[Any], Any]) -> list[Any]:
        """What `convert` makes of each of `raw_rows`; a list shared like its items."""
        last_rows, last_products = self._last
        if raw_rows is last_rows:
            return last_products
        memo = self._memo
        products = []
        for raw in raw_rows:
            key = self._key(raw)
            product = memo.get(key)
            if product is None:
                product = self._convert(make_row(raw))
                with self._lock:
                    if len(memo) >= self._size:  # oldest first: dicts keep their order
                        del memo[next(iter(memo))]
                    memo[key] = product
            products.append(product)
        self._last = (raw_rows, products)
        return products

    def _key(self, raw: Any) -> tuple[Any, ...]:
        key = raw if type(raw) is tuple else tuple(raw)
        for index in self._json_columns:  # usually text (see the module): the key as it is
            if not isinstance(key[index], _TEXT):
                return self._canonical(key)
        return key

    def _canonical(self, key: tuple[Any, ...]) -> tuple[Any, ...]:
        """`key` with each parsed JSON value as its canonical text: equal documents, equal keys."""
        values = list(key)
        for index in self._json_columns:
            if not isinstance(values[index], _TEXT):
                values[index] = json.dumps(values[index], sort_keys=True, separators=(",", ":"))
        return tuple(values)
