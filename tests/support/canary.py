"""Scans for the canary control token: files, database rows, text."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import MetaData, create_engine, select


def scan_text(label: str, text: str | bytes, needle: str) -> list[str]:
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
    return [label] if needle.encode() in raw else []


def scan_files(root: Path, needle: str) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if needle.encode() in data:
                found.append(str(path))
    return found


def scan_database(url: str, needle: str) -> list[str]:
    """Every row of every table, every column, as text and bytes."""
    engine = create_engine(url)
    found = []
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as connection:
            for table in meta.sorted_tables:
                for row in connection.execute(select(table)):
                    for column, value in zip(table.columns, row, strict=True):
                        if value is None:
                            continue
                        raw = value if isinstance(value, bytes) else str(value).encode()
                        if needle.encode() in raw:
                            found.append(f"{table.name}.{column.name}")
    finally:
        engine.dispose()
    return found
