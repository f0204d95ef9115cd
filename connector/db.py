"""Database engine and sessions, shared by the web app, the CLI and the worker.

Services take a `Session` argument; only the web layer knows about the per-request session kept
in `flask.g`. SQLite (the embedded default) runs in WAL mode with a busy timeout, so the web app
and the worker threads can write at the same time; every transaction takes its write lock at BEGIN.
PostgreSQL (`postgresql+psycopg://`) takes concurrent writers from any number of processes and
machines: code that relies on one writer at a time says how it does without on PostgreSQL (ticket
numbers, blobs, migrations).
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MIGRATION_LOCK = 0x636F6E6E6563746F  # "connecto": the PostgreSQL advisory lock key of `Database.migrate`


class Database:
    """One engine and its session factory."""

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        kwargs: dict = {}
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
            if parsed.get_backend_name() == "postgresql" and "application_name" not in parsed.query:
                kwargs["connect_args"] = {"application_name": "connector"}  # names us in pg_stat_activity
        self.engine: Engine = create_engine(url, **kwargs)
        if parsed.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
        elif self.engine.dialect.driver == "psycopg":
            event.listen(self.engine, "connect", _psycopg_text_without_nul)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def location(self) -> str:
        parsed = make_url(self.url)
        if parsed.get_backend_name() == "sqlite":
            return str(Path(parsed.database).resolve()) if parsed.database else ":memory:"
        return parsed.render_as_string(hide_password=True)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        session = self.sessionmaker()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def bulk_session(self, cache_megabytes: int = 8) -> Iterator[Session]:
        """A session on a connection of its own with a smaller SQLite page cache, for a long bulk job.

        The default cache (64 MB a connection, see `_sqlite_pragmas`) is sized for searches over a
        large history; a job that mostly appends, like extracting bodies after an import, gains
        nothing from it but memory. The connection is the session's for the whole job (a pooled
        session may get another connection after each commit), and gets its cache back afterwards.
        """
        with self.engine.connect() as connection:
            before = None
            if self.is_sqlite:
                before = connection.exec_driver_sql("PRAGMA cache_size").scalar()
                connection.exec_driver_sql(f"PRAGMA cache_size=-{int(cache_megabytes) * 1024}")
                connection.commit()
            try:
                with Session(bind=connection, expire_on_commit=False) as session:
                    yield session
            finally:
                if before is not None:
                    connection.rollback()
                    connection.exec_driver_sql(f"PRAGMA cache_size={int(before)}")
                    connection.commit()

    def migrate(self) -> None:
        """Create or upgrade the schema to the newest Alembic revision.

        Every process that starts (`connector serve`, each `connector worker`, the CLI) migrates, so after
        an upgrade several may try at once: they take turns (SQLite's write lock; on PostgreSQL an
        advisory lock held by the one transaction that runs every pending revision), and the later
        ones find nothing left to do.
        """
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # Let SQLAlchemy issue BEGIN itself (see _sqlite_begin) so transactions really start.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA cache_size=-65536")  # 64 MB page cache: searches over a large history stay in memory
    cursor.execute("PRAGMA mmap_size=268435456")
    cursor.close()


def _psycopg_text_without_nul(dbapi_connection, _record) -> None:
    """PostgreSQL's text cannot hold NUL characters, which mail (a header, a badly decoded body) and
    forms can carry: every string sent becomes U+FFFD there instead of failing the whole write. The
    same string is replaced the same way in a lookup, so deduplication by Message-ID still holds."""
    from psycopg.types import string

    class Dumper(string.StrDumperUnknown):
        def dump(self, obj: str):
            return super().dump(obj.replace("\x00", "\ufffd") if "\x00" in obj else obj)

    class BinaryDumper(string.StrBinaryDumper):
        def dump(self, obj: str):
            return super().dump(obj.replace("\x00", "\ufffd") if "\x00" in obj else obj)

    dbapi_connection.adapters.register_dumper(str, Dumper)
    dbapi_connection.adapters.register_dumper(str, BinaryDumper)


def _sqlite_begin(connection) -> None:
    # IMMEDIATE takes the write lock up front: no deadlock between two readers that both upgrade.
    connection.exec_driver_sql("BEGIN IMMEDIATE")
