"""Alembic on both databases: the migrations build exactly the models' schema (a model changed without a
migration fails here), each revision goes up and down, upgrades carry existing rows along, and
`connector init` creates a database from nothing."""
from __future__ import annotations

import os
import re

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, MetaData, String, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from connector.db import MIGRATIONS_DIR, Database
from connector.models import Base
from connector.ingest import FetchedMail, ingest

# What the migrations create for the search that the models do not declare (a virtual table, a
# generated column only one database has, indexes only its query planner uses).
SEARCH_OBJECTS = {
    "sqlite": re.compile(r"(articles|tickets)_fts(_\w+)?$"),
    "postgresql": re.compile(r"search_vector|ix_articles_search|ix_tickets_\w+_trgm$"),
}


def _revision(number: str):
    """The module of one revision (its file name starts with the number)."""
    import importlib.util

    (path,) = (MIGRATIONS_DIR / "versions").glob(f"{number}_*.py")
    spec = importlib.util.spec_from_file_location(f"revision_{number}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config(connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def _differences(engine, metadata: MetaData) -> list:
    """What autogenerate would write to bring the database to `metadata` (types and defaults included)."""
    search = SEARCH_OBJECTS[engine.dialect.name]

    def include(obj, name, type_, reflected, compare_to) -> bool:
        return not (reflected and compare_to is None and name and search.match(name))

    def same_default(context, inspected_column, metadata_column, inspected, metadata_default, rendered) -> bool | None:
        # SQLite reflects DEFAULT '' as "('')", which alembic's own comparison cannot read as ''.
        if engine.dialect.name == "sqlite" and inspected is not None and rendered is not None:
            strip = lambda value: re.sub(r"^\((.*)\)$", r"\1", value).strip("'\"")  # noqa: E731
            return strip(inspected) != strip(rendered)
        return None

    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={
            "compare_type": True, "compare_server_default": same_default, "include_object": include})
        return compare_metadata(context, metadata)


@pytest.fixture
def empty_database(make_database_url):
    """An empty database on this test's backend (nothing migrated)."""
    url = make_database_url("empty", migrated=False)
    if url.startswith("sqlite:"):
        os.makedirs(os.path.dirname(make_url(url).database), exist_ok=True)
    engine = create_engine(url, poolclass=NullPool)
    yield url, engine
    engine.dispose()


def test_the_migrations_build_the_models_schema(empty_database):
    url, engine = empty_database
    Database(url).migrate()
    assert _differences(engine, Base.metadata) == []


def test_a_model_change_without_a_migration_is_seen(empty_database):
    url, engine = empty_database
    Database(url).migrate()
    changed = MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["tickets"].append_column(Column("priority", String(16), nullable=True))
    differences = _differences(engine, changed)
    assert [d[0] for d in differences] == ["add_column"] and differences[0][3].name == "priority"


def test_every_revision_goes_up_and_down(empty_database):
    """Up one revision at a time, then down one at a time: each downgrade gives back exactly the schema
    the database had at that revision on the way up (tables, columns, indexes, triggers, functions)."""
    url, engine = empty_database
    revisions = [r.revision for r in reversed(list(ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()))]
    assert revisions[0] == "0001" and len(revisions) >= 6
    with engine.begin() as connection:
        cfg = _config(connection)
        going_up = {"base": _schema(connection)}
        for revision in revisions:
            command.upgrade(cfg, revision)
            going_up[revision] = _schema(connection)
        for revision in reversed(["base"] + revisions[:-1]):
            command.downgrade(cfg, revision)
            assert _schema(connection) == going_up[revision], f"downgrade to {revision}"
        command.upgrade(cfg, "head")
    assert _differences(engine, Base.metadata) == []


def _schema(connection) -> set[tuple]:
    """The database's objects, by kind and name (and each column's type)."""
    if connection.dialect.name == "sqlite":
        objects = set(connection.execute(text("SELECT type, name, tbl_name FROM sqlite_master "
                                              "WHERE name NOT LIKE 'sqlite_%' AND name != 'alembic_version'")))
        for (table,) in connection.execute(text("SELECT name FROM sqlite_master WHERE type = 'table' "
                                                "AND name != 'alembic_version'")).all():
            objects |= {("column", table, row[1], row[2].upper(), bool(row[3]))
                        for row in connection.exec_driver_sql(f'PRAGMA table_info("{table}")')}
        return objects
    queries = {
        "column": "SELECT table_name, column_name, data_type, is_nullable, is_generated FROM information_schema.columns "
                  "WHERE table_schema = current_schema() AND table_name != 'alembic_version'",
        "index": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()",
        "constraint": "SELECT conrelid::regclass::text, conname FROM pg_constraint "
                      "WHERE connamespace = current_schema()::regnamespace",
        "function": "SELECT p.proname FROM pg_proc AS p WHERE p.pronamespace = current_schema()::regnamespace AND "
                    "NOT EXISTS (SELECT 1 FROM pg_depend AS d WHERE d.objid = p.oid AND d.deptype = 'e')",  # extensions stay
        "sequence": "SELECT sequencename FROM pg_sequences WHERE schemaname = current_schema()",
        "storage": "SELECT attrelid::regclass::text, attname, attstorage, attcompression FROM pg_attribute "
                   "WHERE attrelid = 'blobs'::regclass AND attname = 'data'",
    }
    tables = set(connection.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"))
                 .scalars())
    return {(kind,) + tuple(row) for kind, sql in queries.items()
            if kind != "storage" or "blobs" in tables for row in connection.execute(text(sql))
            if "alembic_version" not in row}


def test_an_upgrade_carries_existing_rows_along(empty_database):
    """A database at 0004 with a mailbox, a ticket and its mail: after the upgrade the mailbox has its owner's
    identity (0005), its text is searchable and new tickets are numbered after the old ones (0006)."""
    from connector import tickets, users
    from connector.mail.parse import parse_message
    from connector.models import Account, Ticket
    from tests.support.mail import make_mail

    url, engine = empty_database
    with engine.begin() as connection:
        command.upgrade(_config(connection), "0004")
        connection.execute(text(
            "INSERT INTO accounts (address, display_name, token_owner, tenant_id, home_account_id, status, "
            "connected_at, created_at, folder, post_import_action, move_to_folder, last_uid, sync_total, sync_done, "
            "failure_count) VALUES ('desk@x.test', '', '', '', 'oid-1.tid-1', 'connected', '2026-01-01 00:00:00', "
            "'2026-01-01 00:00:00', 'INBOX', 'keep', '', 0, 0, 0, 0)"))
        connection.execute(text(
            "INSERT INTO tickets (number, account_id, subject, status, customer_address, customer_name, created_at, "
            "updated_at, article_count) SELECT 10041, id, 'Old ticket', 'open', 'ann@example.net', '', "
            "'2026-01-01 00:00:00', '2026-01-01 00:00:00', 1 FROM accounts"))
        connection.execute(text(
            "INSERT INTO articles (ticket_id, account_id, direction, message_id, in_reply_to, \"references\", "
            "from_addr, from_name, to_addrs, cc_addrs, subject, body_text, size, is_auto, is_bounce, notes, "
            "created_at, body_pending) SELECT id, account_id, 'in', '<old@x>', '', '', 'ann@example.net', '', '', '', "
            "'Old ticket', 'An ancient quasar report.', 10, false, false, '', '2026-01-01 00:00:00', false "
            "FROM tickets"))
    db = Database(url)
    db.migrate()
    with db.session() as session:
        admin = users.create_user(session, "admin@x.test", "correct horse battery", "admin")
        account = session.query(Account).one()
        assert account.token_subject == "oid-1"  # 0005 carried the identity over
        old_ticket = session.query(Ticket).one().id
        raw = make_mail(to="desk@x.test", subject="New one")
        new = ingest(session, account, [FetchedMail(raw, parse_message(raw))])[0]
        assert session.get(Ticket, new.ticket_id).number == 10042
        assert [t.id for t in tickets.search_tickets(session, admin, q="quasar").items] == [old_ticket]
    db.dispose()


def test_connector_init_creates_a_database_from_nothing(empty_database, app_config, database_backend):
    from click.testing import CliRunner

    from connector.cli import main

    url, engine = empty_database
    if database_backend == "postgresql":  # a password in the URL is never printed (the test server trusts anyone)
        url = make_url(url).set(password="s3cret-pw").render_as_string(hide_password=False)
        shown = make_url(url).render_as_string(hide_password=True)
    else:
        shown = os.path.abspath(make_url(url).database)
    env = {"CONNECTOR_CONFIG": os.devnull, "CONNECTOR_APP_DATA_DIR": app_config["app"]["data_dir"],
           "CONNECTOR_DATABASE_URL": url}
    result = CliRunner().invoke(main, ["init"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"database ready: {shown}"
    assert "s3cret-pw" not in result.output
    assert _differences(engine, Base.metadata) == []


@pytest.mark.backends("postgresql", reason="PostgreSQL's extensions")
def test_without_extension_privileges_the_migration_goes_on_and_search_still_works(postgres, database_backend):
    """A role that may not create extensions (no CREATE on the database): revision 0006 goes on without
    unaccent and pg_trgm; the search finds the same by words and any part of a ticket's fields, only
    diacritics are not folded then."""
    from connector import tickets, users
    from connector.mail.parse import parse_message
    from connector.models import Account
    from tests.support.mail import make_mail

    role, url = f"connector_plain_{os.getpid()}", None
    admin = create_engine(postgres.url("postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as connection:
            if not connection.execute(text("SELECT rolsuper OR rolcreaterole FROM pg_roles "
                                           "WHERE rolname = current_user")).scalar():
                pytest.skip("the test server's role may not create roles")
            connection.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        url = postgres.create_database(migrated=False)
        database = make_url(url).database
        with create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool).connect() as connection:
            connection.execute(text(f'REVOKE CREATE ON DATABASE "{database}" FROM PUBLIC'))
            connection.execute(text(f'GRANT CREATE, USAGE ON SCHEMA public TO "{role}"'))
        plain = Database(make_url(url).set(username=role).render_as_string(hide_password=False))
        plain.migrate()
        with plain.engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM pg_extension WHERE extname IN "
                                           "('unaccent', 'pg_trgm')")).scalar() == 0
        assert _differences(plain.engine, Base.metadata) == []
        with plain.session() as session:
            user = users.create_user(session, "admin@x.test", "correct horse battery", "admin")
            account = Account(address="desk@x.test")
            session.add(account)
            session.flush()
            raw = make_mail(to="desk@x.test", sender="zoe@example.net", subject="Crème brûlée",
                            body="The XK-17 printer is jammed.")
            found = ingest(session, account, [FetchedMail(raw, parse_message(raw))])[0].ticket_id
            for query in ("xk-17 print", "printer", "rème br", "zoe@exa", "CRÈME"):
                assert [t.id for t in tickets.search_tickets(session, user, q=query).items] == [found], query
            assert tickets.search_tickets(session, user, q="creme").items == []  # not folded without unaccent
        # the operator adds the extensions later, as README says
        with create_engine(url, poolclass=NullPool).begin() as connection:
            connection.exec_driver_sql(_revision("0006").ENABLE_EXTENSIONS_LATER)
        with plain.session() as session:
            assert [t.id for t in tickets.search_tickets(session, user, q="creme").items] == [found]
            session.execute(text("SET LOCAL enable_seqscan = off"))
            plan = "\n".join(session.execute(text("EXPLAIN SELECT id FROM tickets WHERE subject ILIKE '%rème%'"))
                             .scalars())
            assert "ix_tickets_subject_trgm" in plan
        assert _differences(plain.engine, Base.metadata) == []
        plain.dispose()
    finally:
        if url is not None:
            postgres.drop_database(url, wait=True)  # before the role that owns its tables
        with admin.connect() as connection:
            connection.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()


def test_processes_that_start_together_migrate_one_after_the_other(empty_database, app_config):
    """Several `connector init` (as serve, workers and the CLI all migrate on start) on an empty database at
    once: one creates the schema, the others wait for it and find nothing to do."""
    import subprocess

    from tests.support.live import connector_command

    url, engine = empty_database
    env = dict(os.environ, CONNECTOR_CONFIG=os.devnull, CONNECTOR_APP_DATA_DIR=app_config["app"]["data_dir"],
               CONNECTOR_DATABASE_URL=url)
    processes = [subprocess.Popen(connector_command() + ["init"], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outcomes = [(p.wait(timeout=120), p.stderr.read()) for p in processes]
    for process in processes:
        process.stdout.close()
        process.stderr.close()
    assert [code for code, _ in outcomes] == [0, 0, 0, 0], "\n".join(err for _, err in outcomes)
    assert _differences(engine, Base.metadata) == []
