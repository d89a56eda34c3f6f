"""What a database holds, to prove a refused call changed nothing."""

from __future__ import annotations

from sqlalchemy import MetaData, create_engine, func, select

# Written by the leaders' lease renewals on their own schedule, whatever the requests.
BACKGROUND_TABLES = frozenset({"leader_leases", "governance_leases"})


def row_counts(url: str) -> dict[str, int]:
    """Rows per table, but the tables background work writes on its own."""
    engine = create_engine(url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as connection:
            return {
                table.name: connection.execute(select(func.count()).select_from(table)).scalar_one()
                for table in meta.sorted_tables
                if table.name not in BACKGROUND_TABLES
            }
    finally:
        engine.dispose()


def table_rows(url: str, table_name: str) -> list[tuple[object, ...]]:
    engine = create_engine(url)
    try:
        meta = MetaData()
        meta.reflect(engine, only=[table_name])
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(select(meta.tables[table_name]))]
    finally:
        engine.dispose()
