"""PostgreSQL: a backlog's raw mail is committed over connections of its own before the batch that refers to it
(connector/raw_writer.py). Nothing may be lost or doubled between the two commits: the database refusing the raw
mail stops the pass before its batch, and a `connector sync --once` killed after the raw mail's commit and before
the batch's leaves mail that the next pass imports once, reusing the stored bytes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from sqlalchemy import func, select, text

from connector.models import Account, Article, Blob, ImportFailure, Ticket
from connector.sync import DEFER_BODIES_FROM, SyncError
from tests.support.app import connector_env
from tests.support.mail import connect, make_mail, run_pass, wait_until

POSTGRESQL = pytest.mark.backends("postgresql", reason="the raw writers write the `blobs` table of PostgreSQL; "
                                                       "SQLite writes pack files (test_backlog.py)")
COUNT = DEFER_BODIES_FROM + 8  # one batch, a backlog
HOLD = 0x726177  # advisory lock key the test holds while the batch's articles wait for it


def _backlog(mail_app, org, ca, agent, dovecot) -> tuple[int, str]:
    account_id, address = connect(mail_app, org, ca, agent)
    for i in range(COUNT):
        dovecot.deliver(address, make_mail(to=address, subject=f"Backlog {i}", body=f"Body number {i}."))
    return account_id, address


def _sql(app, *statements: str) -> None:
    with app.extensions["connector"].db.engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))


def _state(app, account_id: int) -> dict:
    with app.extensions["connector"].db.session() as session:
        return dict(
            last_uid=session.get(Account, account_id).last_uid,
            articles=session.scalar(select(func.count()).select_from(Article).where(Article.account_id == account_id)),
            distinct=session.scalar(select(func.count(Article.message_id.distinct()))
                                    .where(Article.account_id == account_id)),
            tickets=session.scalar(select(func.count()).select_from(Ticket).where(Ticket.account_id == account_id)),
            blobs=session.scalar(select(func.count()).select_from(Blob)),
            failures=session.scalar(select(func.count()).select_from(ImportFailure)),
            raw_intact=session.scalar(select(func.count()).select_from(Article)
                                      .join(Blob, Blob.sha256 == Article.raw_sha256)
                                      .where(Article.account_id == account_id,
                                             func.length(Blob.data) == Article.size, Blob.size == Article.size)))


def _complete(state: dict) -> bool:
    """Every mail once, on its own ticket, with its raw mail; nothing quarantined, no raw mail stored twice."""
    return state | dict(last_uid=None) == dict(last_uid=None, articles=COUNT, distinct=COUNT, tickets=COUNT,
                                               blobs=COUNT, failures=0, raw_intact=COUNT) and state["last_uid"] > 0


@POSTGRESQL
def test_raw_mail_the_database_refuses_stops_the_pass_before_its_batch(mail_app, org, ca, agent, dovecot):
    account_id, _ = _backlog(mail_app, org, ca, agent, dovecot)
    _sql(mail_app,  # the database refuses to store any raw mail, as a full disk or a lost connection would
         "CREATE FUNCTION refuse_blob() RETURNS trigger LANGUAGE plpgsql AS "
         "$$ BEGIN RAISE EXCEPTION 'no space left for blobs (test)'; END $$",
         "CREATE TRIGGER refuse_blob BEFORE INSERT ON blobs FOR EACH ROW EXECUTE FUNCTION refuse_blob()")
    with pytest.raises(SyncError) as failure:
        run_pass(mail_app, account_id)
    assert "Could not store raw mail in the database" in str(failure.value)
    assert "no space left for blobs (test)" in str(failure.value) and failure.value.retry_after == 60
    state = _state(mail_app, account_id)
    assert (state["last_uid"], state["articles"], state["tickets"], state["failures"]) == (0, 0, 0, 0)
    _sql(mail_app, "DROP TRIGGER refuse_blob ON blobs")
    assert run_pass(mail_app, account_id).imported == COUNT
    assert _complete(_state(mail_app, account_id)), _state(mail_app, account_id)


@POSTGRESQL
def test_a_kill_between_the_raw_mail_and_its_batch_loses_nothing_and_doubles_nothing(mail_app, org, ca, agent,
                                                                                       dovecot):
    account_id, address = _backlog(mail_app, org, ca, agent, dovecot)
    rt = mail_app.extensions["connector"]
    # The batch's articles wait for a lock this test holds: the raw mail is committed, the batch is not.
    _sql(mail_app,
         f"CREATE FUNCTION hold_articles() RETURNS trigger LANGUAGE plpgsql AS "
         f"$$ BEGIN PERFORM pg_advisory_xact_lock_shared({HOLD}); RETURN NULL; END $$",
         "CREATE TRIGGER hold_articles BEFORE INSERT ON articles FOR EACH STATEMENT EXECUTE FUNCTION hold_articles()")
    with rt.db.engine.connect() as holder:
        holder.execute(text(f"SELECT pg_advisory_lock({HOLD})"))
        env = connector_env(rt.settings)
        process = subprocess.Popen([sys.executable, "-m", "connector.cli", "sync", "--account", address, "--once"],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            def waiting() -> bool:
                with rt.db.engine.connect() as conn:
                    return conn.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'")) > 0
            wait_until(lambda: process.poll() is not None or waiting(), timeout=60)
            assert process.poll() is None, process.stdout.read()
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        # killed in the window: every raw mail committed, no article, the high-water mark where it was
        state = _state(mail_app, account_id)
        assert (state["blobs"], state["articles"], state["last_uid"]) == (COUNT, 0, 0), state
        holder.execute(text(f"SELECT pg_advisory_unlock({HOLD})"))
        holder.commit()
    _sql(mail_app, "DROP TRIGGER hold_articles ON articles")
    result = run_pass(mail_app, account_id)
    assert (result.imported, result.duplicates) == (COUNT, 0)
    assert _complete(_state(mail_app, account_id)), _state(mail_app, account_id)
