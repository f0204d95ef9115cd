"""The database a benchmark runs on: the embedded SQLite file, or a private PostgreSQL cluster.

`python -m bench --database postgresql` provisions PostgreSQL the way the tests do
(tests/support/postgres.py `PostgresServer.provision`: initdb in a temporary folder, a free port on
127.0.0.1, stopped and removed at the end; or the server in CONNECTOR_TEST_DATABASE_URL), but with
production durability: fsync, synchronous_commit and full_page_writes on, where the tests turn them
off. The connector's own migrations create the schema (`Database.migrate` in BenchEnv). The settings
the server really runs with are read back and reported beside the figures.

`Reader` is a light read-only connection for the harness's own polling (progress of an import, how
many mailboxes have synced), kept apart from the connector's engine so it takes no lock and adds no
pool; its SQL uses `?` placeholders on both databases.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

BACKENDS = ("sqlite", "postgresql")
# What an operator would run in production on a machine like this one, not the tests' fsync=off.
DURABLE = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "shared_buffers": "1GB",  # about 1/4 of what a dedicated 4 GB database machine has; this one has 24 GB
    "effective_cache_size": "4GB",
    "maintenance_work_mem": "256MB",
    "max_wal_size": "4GB",
    "max_connections": "400",  # three workers, the web app and the harness, each with a pool
    "timezone": "UTC",
}
REPORTED = ("server_version", "fsync", "synchronous_commit", "full_page_writes", "shared_buffers", "work_mem",
            "max_connections")


class BenchPostgres:
    """A private PostgreSQL for one benchmark: one database in it, for the connector to migrate."""

    def __init__(self) -> None:
        from tests.support import postgres as pg

        settings = {key: value for key, value in pg.SERVER_SETTINGS.items()
                    if key not in ("fsync", "synchronous_commit", "full_page_writes")}
        settings.update(DURABLE)
        self.server = pg.PostgresServer.provision(settings)
        try:
            self.url = self.server.create_database(migrated=False)
            self.settings = self.show()
        except BaseException:
            self.server.stop()
            raise

    def show(self) -> dict[str, str]:
        import psycopg

        with psycopg.connect(self.libpq_url, autocommit=True) as conn:
            return {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in REPORTED}

    @property
    def libpq_url(self) -> str:
        return libpq(self.url)

    def stop(self) -> None:
        self.server.stop()


def libpq(url: str) -> str:
    """postgresql+psycopg://... -> postgresql://... (what psycopg.connect takes)."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def describe(settings: dict[str, str] | None) -> str:
    """One line for the report: the PostgreSQL version and its durability settings."""
    if not settings:
        return ""
    return (f"PostgreSQL {settings['server_version']} (private cluster made with initdb; fsync "
            f"{settings['fsync']}, synchronous_commit {settings['synchronous_commit']}, full_page_writes "
            f"{settings['full_page_writes']}, shared_buffers {settings['shared_buffers']}, work_mem "
            f"{settings['work_mem']})")


class Reader:
    """A read-only autocommit connection to the connector's database, for the harness's polling."""

    def __init__(self, url: str) -> None:
        self.postgres = url.startswith("postgresql")
        if self.postgres:
            import psycopg

            self._conn = psycopg.connect(libpq(url), autocommit=True)
        else:
            path = url.split("sqlite:///", 1)[1]
            self._conn = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, isolation_level=None,
                                         check_same_thread=False, timeout=30)

    def all(self, sql: str, *params) -> list[tuple]:
        if self.postgres:
            sql = sql.replace("?", "%s")
        return list(self._conn.execute(sql, params).fetchall())

    def one(self, sql: str, *params):
        rows = self.all(sql, *params)
        return rows[0] if rows else None

    def scalar(self, sql: str, *params):
        row = self.one(sql, *params)
        return row[0] if row else None

    def close(self) -> None:
        self._conn.close()
