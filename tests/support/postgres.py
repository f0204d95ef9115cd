"""A throwaway PostgreSQL for the tests, provisioned like the private Dovecot.

    server = PostgresServer.provision()       # CONNECTOR_TEST_DATABASE_URL, or initdb in a temp folder
    url = server.create_database()            # a fresh database, migrated (a copy of a template)
    ...
    server.drop_database(url)
    server.stop()                             # pg_ctl stop and the folder removed (if it made one)

Without `CONNECTOR_TEST_DATABASE_URL` a private cluster is created with Debian's binaries
(`/usr/lib/postgresql/<version>/bin`) in a temporary folder, on a free port on 127.0.0.1, trusting
local logins, with durability turned off (fsync, full page writes: a test cluster holds nothing
worth a crash) and room for many connections (live servers and worker processes each hold a pool).
`initdb` and `postgres` refuse to run as root, so as root they run as the `postgres` user.

With `CONNECTOR_TEST_DATABASE_URL` (for example `postgresql+psycopg://me:pw@db.example/postgres`)
the server at that URL is used: its role needs CREATEDB; the databases made here are named
`connector_test_<pid>_...` and dropped again.

Each test gets its own database: `CREATE DATABASE ... TEMPLATE` copies a migrated template in about
0.1 s, much less than migrating. Spare copies are made ahead by a background thread, and databases
are dropped there too, so a test rarely waits for either.
"""
from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import queue
import shutil
import subprocess
import tempfile
import threading
import weakref
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from tests.support.net import free_port

ENV_URL = "CONNECTOR_TEST_DATABASE_URL"
DRIVER = "postgresql+psycopg"
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "max_connections": "400",  # live servers, workers and the tests' own engines, each with a pool
    "shared_buffers": "128MB",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # Not UTC, and an odd offset: an aware datetime sent where the schema keeps naive UTC would be shifted
    # by the server and show up in the tests as a wrong time.
    "timezone": "Pacific/Chatham",
    "log_min_messages": "warning",
    "log_min_error_statement": "panic",  # the tests provoke constraint errors on purpose
}
SPARE_DATABASES = 2


class PostgresError(RuntimeError):
    """The test PostgreSQL could not be provisioned; the message says why and what to do."""


def binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian: /usr/lib/postgresql/<version>/bin)."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    found.sort(key=lambda p: _version_key(p.parent.name))
    if found:
        return found[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _version_key(name: str) -> tuple:
    return tuple(int(part) if part.isdigit() else 0 for part in name.split("."))


def available() -> bool:
    return bool(os.environ.get(ENV_URL)) or binaries() is not None


_running: "weakref.WeakSet[PostgresServer]" = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    """No stray postgres after the test run, whatever happened to the fixtures."""
    for server in list(_running):
        server.stop()


class PostgresServer:
    """A PostgreSQL server the tests may create and drop databases on."""

    def __init__(self, admin_url: URL, *, workdir: Path | None = None, bindir: Path | None = None) -> None:
        self.admin_url = admin_url  # the maintenance database
        self.workdir = workdir  # set when this process created the cluster (and removes it)
        self.bindir = bindir
        self.prefix = f"connector_test_{os.getpid()}"
        self._names = itertools.count(1)
        self._engine = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        self.template: str | None = None
        self._spares: queue.Queue[str] = queue.Queue()
        self._todo: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self._made: set[str] = set()
        self._worker: threading.Thread | None = None
        self._stopped = False
        _running.add(self)

    # -- provisioning ----------------------------------------------------------------------------
    @classmethod
    def provision(cls, settings: dict[str, str] | None = None) -> "PostgresServer":
        """The server in CONNECTOR_TEST_DATABASE_URL, else a private cluster started here (with these
        server settings; default SERVER_SETTINGS)."""
        given = os.environ.get(ENV_URL)
        if given:
            url = make_url(given)
            if not url.drivername.startswith("postgresql"):
                raise PostgresError(f"{ENV_URL} must be a postgresql:// URL, not {url.drivername}://")
            server = cls(url.set(drivername=DRIVER))
            server._check()
            return server
        bindir = binaries()
        if bindir is None:
            raise PostgresError("PostgreSQL is not installed (apt-get install postgresql; scripts/test does), "
                                f"or set {ENV_URL} to a server whose role may create databases")
        return cls._start_cluster(bindir, SERVER_SETTINGS if settings is None else settings)

    @classmethod
    def _start_cluster(cls, bindir: Path, settings: dict[str, str]) -> "PostgresServer":
        # Not under pytest's basetemp: as root the server runs as "postgres", which must own the folder
        # and traverse the path (/tmp/pytest-of-root is 0700).
        workdir = Path(tempfile.mkdtemp(prefix="connector-postgres-"))
        try:
            user = _run_as()
            if user is not None:
                entry = pwd.getpwnam(user)
                os.chown(workdir, entry.pw_uid, entry.pw_gid)
            data = workdir / "data"
            _run(bindir / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync",
                 "--locale=C.UTF-8" if _has_c_utf8() else "--no-locale")
            last_error = ""
            for _ in range(3):  # a free port can be taken by someone else before the server binds it
                port = free_port()
                options = " ".join([f"-p {port}", f"-k {workdir}"] +
                                   [f"-c {key}={value}" for key, value in settings.items()])
                done = _run(bindir / "pg_ctl", "-D", data, "-l", workdir / "server.log", "-w", "-t", "60",
                            "-o", options, "start", check=False)
                if done.returncode == 0:
                    url = URL.create(DRIVER, username="postgres", host="127.0.0.1", port=port, database="postgres")
                    server = cls(url, workdir=workdir, bindir=bindir)
                    server._check()
                    return server
                last_error = done.stdout + done.stderr + _tail(workdir / "server.log")
            raise PostgresError(f"the test PostgreSQL did not start:\n{last_error}")
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise

    def _check(self) -> None:
        try:
            with self._engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - any failure to connect is reported the same way
            raise PostgresError(f"cannot connect to the test PostgreSQL at "
                                f"{self.admin_url.render_as_string(hide_password=True)}: {exc}") from exc

    @property
    def version(self) -> str:
        with self._engine.connect() as connection:
            return connection.execute(text("SHOW server_version")).scalar()

    # -- databases -------------------------------------------------------------------------------
    def url(self, name: str) -> str:
        return self.admin_url.set(database=name).render_as_string(hide_password=False)

    def prepare_template(self, migrate) -> None:
        """Create the template every test database copies: `migrate(url)` brings it to the newest schema."""
        name = f"{self.prefix}_template"
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._execute(f'CREATE DATABASE "{name}"')
        self._made.add(name)
        migrate(self.url(name))
        # No one may be connected to a template while it is copied.
        self._execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' "
                      "AND pid <> pg_backend_pid()")
        self.template = name
        self._worker = threading.Thread(target=self._background, name="postgres-databases", daemon=True)
        self._worker.start()
        for _ in range(SPARE_DATABASES):
            self._todo.put(("create", None))

    def create_database(self, migrated: bool = True) -> str:
        """A new database: a copy of the migrated template, or empty (`migrated=False`); its URL."""
        if migrated and self.template is None:
            raise PostgresError("prepare_template() first")
        if migrated:
            try:
                name = self._spares.get_nowait()
            except queue.Empty:
                name = self._create(self.template)
            self._todo.put(("create", None))  # replace the spare
        else:
            name = self._create(None)
        return self.url(name)

    def drop_database(self, url: str, wait: bool = False) -> None:
        """Drop it (WITH FORCE: connections a test left open do not hold it back), in the background once
        there is a template unless `wait`."""
        if self._worker is None or wait:
            self._drop(make_url(url).database)
        else:
            self._todo.put(("drop", make_url(url).database))

    def _create(self, template: str | None) -> str:
        name = f"{self.prefix}_{next(self._names)}"
        self._made.add(name)
        self._execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return name

    def _drop(self, name: str) -> None:
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._made.discard(name)

    def _background(self) -> None:
        while True:
            job, name = self._todo.get()
            if job == "stop":
                return
            try:
                if job == "drop":
                    self._drop(name)
                elif self._spares.qsize() < SPARE_DATABASES:
                    self._spares.put(self._create(self.template))
            except Exception:  # noqa: BLE001 - a test then creates its database itself, and sees any error
                pass

    def _execute(self, sql: str) -> None:
        with self._engine.connect() as connection:
            connection.exec_driver_sql(sql)

    # -- the end -----------------------------------------------------------------------------------
    def stop(self) -> None:
        """Drop what was made here (on a server given by URL), or stop the private cluster and remove it."""
        if self._stopped:
            return
        self._stopped = True
        if self._worker is not None:
            self._todo.put(("stop", None))
            self._worker.join(timeout=60)
        if self.workdir is None:
            for name in sorted(self._made):
                try:
                    self._drop(name)
                except Exception:  # noqa: BLE001 - best effort on a shared server
                    pass
        self._engine.dispose()
        if self.workdir is not None:
            _run(self.bindir / "pg_ctl", "-D", self.workdir / "data", "-m", "immediate", "-w", "stop", check=False)
            shutil.rmtree(self.workdir, ignore_errors=True)
        _running.discard(self)


def _run_as() -> str | None:
    """The user that runs initdb and postgres: `postgres` when we are root (they refuse root), else us."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresError("running as root, but there is no 'postgres' user to run the test PostgreSQL as "
                            "(apt-get install postgresql creates it)") from None
    return "postgres"


def _run(*command, check: bool = True) -> subprocess.CompletedProcess:
    args = [str(part) for part in command]
    user = _run_as()
    if user is not None:
        args = ["runuser", "-u", user, "--"] + args
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise PostgresError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done


def _has_c_utf8() -> bool:
    return any(Path(p).exists() for p in ("/usr/lib/locale/C.utf8", "/usr/lib/locale/C.UTF-8"))


def _tail(path: Path, size: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return ""
