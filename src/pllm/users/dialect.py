"""The one place where the store's SQL (written in SQLite's dialect, as every feature writes it) becomes
PostgreSQL's, so features keep one copy of their queries and migrations whichever database holds them.

What differs and how it is translated:

- placeholders: `?` -> `%s` (a literal `%` is doubled first);
- `INSERT OR IGNORE INTO t(...) VALUES (...)` -> `INSERT INTO ... ON CONFLICT DO NOTHING`;
- `INSERT OR REPLACE INTO t(cols) VALUES (...)` -> `INSERT ... ON CONFLICT ON CONSTRAINT t_pkey DO UPDATE SET
  col = EXCLUDED.col, ...` (every table the store writes this way has a primary key; PostgreSQL names it
  `<table>_pkey`);
- column types in migrations (`ddl`): `BLOB` -> `BYTEA`, `REAL` -> `DOUBLE PRECISION`, `INTEGER` -> `BIGINT`.

Queries that cannot be written portably at all (the catalog: which tables have a `user_id` column) are
methods of `Dialect`.
"""

from __future__ import annotations

import re
from functools import lru_cache

_INSERT = re.compile(r"^\s*INSERT\s+OR\s+(IGNORE|REPLACE)\s+INTO\s+(\w+)\s*\(([^)]*)\)(.*)$",
                     re.IGNORECASE | re.DOTALL)
_TYPES = [(re.compile(r"\bBLOB\b", re.IGNORECASE), "BYTEA"),
          (re.compile(r"\bREAL\b", re.IGNORECASE), "DOUBLE PRECISION"),
          (re.compile(r"\bINTEGER\b", re.IGNORECASE), "BIGINT")]


class Dialect:
    """SQLite's dialect: the store's SQL as it is written."""

    name = "sqlite"
    begin_write = "BEGIN IMMEDIATE"  # take the write lock up front: a busy writer waits instead of failing later
    user_tables_sql = ("SELECT m.name FROM sqlite_master m JOIN pragma_table_info(m.name) c "
                       "WHERE m.type = 'table' AND c.name = 'user_id' ORDER BY m.name")
    table_exists_sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"

    def query(self, sql: str) -> str:
        """A statement as this database takes it."""
        return sql

    def ddl(self, sql: str) -> str:
        """A migration's column types as this database names them (run through `query` after)."""
        return sql


class PostgresDialect(Dialect):
    name = "postgresql"
    begin_write = "BEGIN"  # writers are serialized by an advisory lock taken right after (see PostgresUserStore)
    user_tables_sql = ("SELECT table_name FROM information_schema.columns WHERE table_schema = current_schema() "
                       "AND column_name = 'user_id' ORDER BY table_name")
    table_exists_sql = ("SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() "
                        "AND table_name = ?")

    def query(self, sql: str) -> str:
        return _to_postgres(sql)

    def ddl(self, sql: str) -> str:
        for pattern, replacement in _TYPES:
            sql = pattern.sub(replacement, sql)
        return sql


@lru_cache(maxsize=1024)
def _to_postgres(sql: str) -> str:
    out = sql.replace("%", "%%").replace("?", "%s")
    match = _INSERT.match(out)
    if match is None:
        return out
    verb, table, cols, rest = match.groups()
    head = f"INSERT INTO {table}({cols}){rest.rstrip().rstrip(';')}"
    if verb.upper() == "IGNORE":
        return f"{head} ON CONFLICT DO NOTHING"
    updates = ", ".join(f"{c.strip()} = EXCLUDED.{c.strip()}" for c in cols.split(","))
    return f"{head} ON CONFLICT ON CONSTRAINT {table}_pkey DO UPDATE SET {updates}"


SQLITE = Dialect()
POSTGRES = PostgresDialect()
