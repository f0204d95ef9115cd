"""Fixtures: real servers (test IdP over HTTPS, Dovecot, SMTP) for the session; an app per test.

Like flaskr's conftest: `app`, `client`, `runner`; plus factories for organisations (a tenant and an
app registration at the test IdP) and people.
"""
from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from connector.runtime import Runtime
from connector import users
from tests.idp import IdentityProvider
from tests.support.app import PASSWORD, Org
from tests.support.tls import TestCA

TEST_BASE_URL = "http://localhost"
SHARED_MAILBOXES = ("shared@contoso.test", "support@contoso.test")
_counter = itertools.count(1)
DATABASE_BACKENDS = ("sqlite", "postgresql")


def require(condition: bool, reason: str) -> None:
    """Skip when a real part is missing on a developer machine; fail in CI, where nothing may be skipped."""
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set: install it; scripts/test does)")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def ca(tmp_path_factory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def idp(ca):
    with IdentityProvider(ca) as provider:
        yield provider


@pytest.fixture(scope="session")
def dovecot(ca, idp, tmp_path_factory):
    from tests.servers.dovecot import DovecotServer, dovecot_available

    require(dovecot_available(), "Dovecot is not installed (apt-get install dovecot-imapd dovecot-lmtpd)")
    # Not under pytest's basetemp: as root Dovecot's mail processes run as "dovecot" and must traverse
    # the path, and any other pytest run resets /tmp/pytest-of-<user> to 0700.
    workdir = Path(tempfile.mkdtemp(prefix="connector-dovecot-"))
    server = DovecotServer(workdir, ca, f"{idp.url}/introspect", shared_mailboxes=SHARED_MAILBOXES)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def smtp_server(ca, idp, dovecot):
    from tests.servers.smtp import SmtpServer

    server = SmtpServer(ca, f"{idp.url}/introspect", deliver=dovecot.deliver,
                        save_sent=lambda login, raw: dovecot.deliver(login, raw, folder="Sent Items"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_org(idp):
    """make_org(redirect_uri=..., **add_app_kwargs) -> Org: a fresh tenant with one app registration."""
    def create(redirect_uri: str = f"{TEST_BASE_URL}/auth/microsoft/callback", **app_kwargs) -> Org:
        n = next(_counter)
        domain = f"org{n}.test"
        tenant = idp.add_tenant(domain)
        secret = f"secret-{n}-value"
        app = idp.add_app(tenant, secret=secret, redirect_uris=[redirect_uri], **app_kwargs)
        return Org(idp, tenant, app, secret, domain)
    return create


@pytest.fixture
def org(make_org) -> Org:
    """A fresh tenant with a single-tenant app whose callback is the test client's."""
    return make_org()


@pytest.fixture(scope="session")
def postgres():
    """The tests' PostgreSQL (CONNECTOR_TEST_DATABASE_URL, or a private cluster made with initdb), with a
    migrated template that each test's database copies."""
    from tests.support import postgres as pg

    require(pg.available(), "PostgreSQL is not installed (apt-get install postgresql), "
                            f"and {pg.ENV_URL} is not set")
    try:
        server = pg.PostgresServer.provision()
    except pg.PostgresError as exc:
        require(False, str(exc))
    try:
        server.prepare_template(lambda url: _migrate(url))
        yield server
    finally:
        server.stop()


def _migrate(url: str) -> None:
    from connector.db import Database

    db = Database(url)
    try:
        db.migrate()
    finally:
        db.dispose()


def pytest_configure(config):
    config.addinivalue_line("markers", "backends(*names, reason): run this database test on these backends "
                                       "only (a feature of one database, such as SQLite's pack files)")


def pytest_generate_tests(metafunc):
    """Every test that touches the database runs on each backend: test ids end in [sqlite] / [postgresql]."""
    if "database_backend" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("backends")
        backends = [b for b in DATABASE_BACKENDS if marker is None or b in marker.args]
        metafunc.parametrize("database_backend", backends, indirect=True, scope="function")


@pytest.fixture
def database_backend(request) -> str:
    """"sqlite" or "postgresql" (see pytest_generate_tests)."""
    return request.param


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """An SQLite database migrated once: each test copies it (a millisecond) rather than migrating (0.3 s)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "connector.db"
    _migrate(f"sqlite:///{path}")
    assert not path.with_name(path.name + "-wal").exists()  # all in the one file, safe to copy
    return path


@pytest.fixture
def make_database_url(database_backend, tmp_path, request):
    """make_database_url(name="connector", migrated=True) -> the URL of a new database on this test's backend.

    SQLite: `<tmp_path>/instance/<name>.db`, a copy of a migrated template or (`migrated=False`) created
    on first use; PostgreSQL: a copy of the migrated template, or an empty database; dropped after the test.
    """
    made: list[str] = []
    server = request.getfixturevalue("postgres") if database_backend == "postgresql" else None

    def create(name: str = "connector", migrated: bool = True) -> str:
        if server is None:
            path = tmp_path / "instance" / f"{name}.db"
            if migrated and not path.exists():
                path.parent.mkdir(mode=0o700, exist_ok=True)
                shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
            return f"sqlite:///{path}"
        url = server.create_database(migrated=migrated)
        made.append(url)
        return url
    yield create
    for url in made:
        server.drop_database(url)


@pytest.fixture
def database_url(make_database_url) -> str:
    """The database of this test's app (`app_config`, `runner`, the default live server)."""
    return make_database_url()


@pytest.fixture
def app_config(tmp_path, idp, ca, database_url) -> dict:
    return {
        "app": {"base_url": TEST_BASE_URL, "data_dir": str(tmp_path / "instance")},
        "database": {"url": database_url},
        "microsoft": {"authority_host": idp.url},
        "tls": {"ca_bundle": str(ca.ca_path)},
    }


@pytest.fixture
def make_app(app_config):
    """Build an app with extra overrides (e.g. the mail servers); the database is migrated."""
    def build(**sections):
        config = {k: dict(v) for k, v in app_config.items()}
        for section, values in sections.items():
            config.setdefault(section, {}).update(values)
        rt = Runtime.create(config)
        rt.db.migrate()
        from connector.web.app import build_app

        application = build_app(runtime=rt, overrides={"flask": {"TESTING": True}})
        return application
    return build


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def mail_config(dovecot, smtp_server) -> dict:
    return {"microsoft": {"imap_host": "127.0.0.1", "imap_port": dovecot.imap_port,
                          "smtp_host": "127.0.0.1", "smtp_port": smtp_server.port}}


@pytest.fixture
def mail_app(make_app, mail_config):
    return make_app(**mail_config)


@pytest.fixture
def rt(app) -> Runtime:
    return app.extensions["connector"]


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app_config, tmp_path):
    """Runs the `connector` CLI against the same database as `app`, configured by environment."""
    env = {
        "CONNECTOR_CONFIG": str(tmp_path / "absent-is-fine.toml"),
        "CONNECTOR_APP_DATA_DIR": app_config["app"]["data_dir"],
        "CONNECTOR_DATABASE_URL": app_config["database"]["url"],
        "CONNECTOR_MICROSOFT_AUTHORITY_HOST": app_config["microsoft"]["authority_host"],
        "CONNECTOR_TLS_CA_BUNDLE": app_config["tls"]["ca_bundle"],
    }
    (tmp_path / "absent-is-fine.toml").write_text("")
    from connector.cli import main

    class Runner:
        def invoke(self, *args, input=None):
            return CliRunner().invoke(main, list(args), input=input, env=env, catch_exceptions=False)
    return Runner()


@pytest.fixture
def make_user(app):
    """Create a person in the app: make_user("agent") -> User with PASSWORD."""
    rt = app.extensions["connector"]

    def create(role: str = "agent", email: str | None = None):
        email = email or f"{role}{next(_counter)}@helpdesk.test"
        with rt.db.session() as session:
            return users.create_user(session, email, PASSWORD, role)
    return create


@pytest.fixture
def admin(make_user):
    return make_user("admin")


@pytest.fixture
def agent(make_user):
    return make_user("agent")


@pytest.fixture
def server_database_url(make_database_url):
    """server_database_url() -> the database for a `LiveServer` of this test's backend: None for SQLite (the
    server's own data folder), else an empty PostgreSQL database (the server migrates it)."""
    def create() -> str | None:
        url = make_database_url(migrated=False)
        return None if url.startswith("sqlite:") else url
    return create


@pytest.fixture(scope="session")
def make_module_database_url(request):
    """make_module_database_url(backend) -> like `server_database_url`, for a server shared by a module's tests
    (its fixture parametrized over DATABASE_BACKENDS); dropped at the end of the run."""
    def create(backend: str) -> str | None:
        if backend == "sqlite":
            return None
        return request.getfixturevalue("postgres").create_database(migrated=False)
    return create


@pytest.fixture
def live_server(tmp_path_factory, idp, ca, server_database_url):
    """live_server(worker=False, env=None, start=True) -> LiveServer: the real `connector serve`.

    Configured only by environment (base URL, data dir, database, authority host, CA bundle, plus
    `env`); stopped with SIGTERM at teardown. With start=False, create users first, then .start().
    Each server has a database of its own on this test's backend (on PostgreSQL an empty one: the
    server migrates it).
    """
    from tests.support.live import LiveServer

    servers = []

    def create(worker: bool = False, env: dict | None = None, start: bool = True) -> LiveServer:
        server = LiveServer(tmp_path_factory.mktemp("live"), idp_url=idp.url, ca_path=ca.ca_path, worker=worker,
                            env=env, database_url=server_database_url())
        servers.append(server)
        return server.start() if start else server
    yield create
    for server in servers:
        server.stop()


def pytest_report_header(config):
    from tests.support import postgres as pg

    bindir = pg.binaries()
    database = ("CONNECTOR_TEST_DATABASE_URL" if os.environ.get(pg.ENV_URL)
                else f"{bindir} (a private cluster)" if bindir else "missing")
    return [f"dovecot: {shutil.which('dovecot') or 'missing'}",
            f"chromium: {'/usr/bin/chromium' if Path('/usr/bin/chromium').exists() else 'missing'}",
            f"postgresql: {database}"]
