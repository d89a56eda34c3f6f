"""Persistence: one SQLAlchemy 2.0 schema for SQLite and PostgreSQL, Alembic migrations."""
