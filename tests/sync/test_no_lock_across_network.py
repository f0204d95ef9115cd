"""No database transaction stays open across a network call: while the sync talks to IMAP or the
sender talks to SMTP, another connection can take SQLite's write lock at once (on PostgreSQL: no
connection is inside a transaction)."""
from __future__ import annotations

import sqlite3

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from connector import users
from connector.mail.imap import ImapMailbox
from connector.mail.smtp import SmtpSubmitter
from connector.outbox import Sender
from connector.sync import AccountSync
from tests.support.mail import connect, make_mail


def write_lock_is_free(app) -> bool:
    """SQLite: another connection takes the write lock at once. PostgreSQL (row locks, no database lock):
    no other connection to the database is inside a transaction."""
    url = make_url(app.extensions["connector"].settings.database.url)
    if url.get_backend_name() != "sqlite":
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as probe:
                return probe.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL").scalar() == 0
        finally:
            engine.dispose()
    probe = sqlite3.connect(url.database, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        probe.close()


def test_imap_and_smtp_calls_hold_no_database_lock(mail_app, org, ca, agent, dovecot, smtp_server, mocker):
    account_id, address = connect(mail_app, org, ca, agent)
    dovecot.deliver(address, make_mail(to=address, subject="Lock check"))
    observed = {}

    class Probing(ImapMailbox):
        def login(self, user, token):
            observed["imap login"] = write_lock_is_free(mail_app)
            super().login(user, token)

        def uids_after(self, last_uid):
            observed["imap search"] = write_lock_is_free(mail_app)
            return super().uids_after(last_uid)

        def fetch(self, uids):
            observed["imap fetch"] = write_lock_is_free(mail_app)
            yield from super().fetch(uids)

    mail_app.extensions["connector"].servers.imap_factory = Probing
    sync = AccountSync(mail_app.extensions["connector"], account_id)
    try:
        assert sync.run_pass().imported == 1
    finally:
        sync.close()

    real_connect, real_send = SmtpSubmitter.connect, SmtpSubmitter.send

    def probing_connect(self, *args):
        observed["smtp connect"] = write_lock_is_free(mail_app)
        return real_connect(self, *args)

    def probing_send(self, *args):
        observed["smtp send"] = write_lock_is_free(mail_app)
        return real_send(self, *args)

    mocker.patch.object(SmtpSubmitter, "connect", probing_connect)
    mocker.patch.object(SmtpSubmitter, "send", probing_send)
    client = mail_app.test_client()
    with mail_app.extensions["connector"].db.session() as session:
        token = users.issue_api_token(session, session.get(type(agent), agent.id))
    ticket_id = client.get("/api/v1/tickets", headers={"Authorization": f"Bearer {token}"}).get_json()["items"][0]["id"]
    client.post(f"/api/v1/tickets/{ticket_id}/reply", headers={"Authorization": f"Bearer {token}"},
                json={"body_text": "ok"})
    assert Sender(mail_app.extensions["connector"], "probe").send_due(lambda: False)
    assert observed == {"imap login": True, "imap search": True, "imap fetch": True,
                        "smtp connect": True, "smtp send": True}
