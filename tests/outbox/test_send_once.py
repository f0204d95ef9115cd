"""Once a reply's DATA was handed to the server, only the sent-folder lookup decides whether it went: the
sender never queues it again by itself (the fault campaign's restarts found replies accepted twice when a
session broke between the server taking DATA and its 250 reaching the worker), and a database outage at
that moment cannot make it look unsent either."""
from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from connector.models import Article, OutboxItem, utcnow
from tests.faults.world import message_id_of
from tests.outbox.test_send import api, outbox_item, send_due, ticket_setup  # noqa: F401 - the fixture
from tests.servers.smtp import Received
from tests.support.mail import wait_until


class CutAfterData:
    """The server's hook for the first message it takes: hold its 250 while the server restarts under the
    session, as an SMTP server restarting (or a network cut) does; later messages go through."""

    def __init__(self, server) -> None:
        self.server = server
        self.cut: list[str] = []
        self.restarted = threading.Event()

    def __call__(self, received: Received) -> None:
        if self.cut:
            return
        self.cut.append(message_id_of(received.raw))
        threading.Thread(target=self._restart, daemon=True).start()
        time.sleep(1.0)  # the 250 waits; meanwhile the server stops and the session is cut

    def _restart(self) -> None:
        self.server.stop()
        time.sleep(0.2)
        for _ in range(50):  # the kernel may hold the port for a moment after the close
            try:
                self.server.start()
                break
            except OSError:
                time.sleep(0.1)
        self.restarted.set()


def accepted(smtp_server, message_id: str) -> int:
    return sum(1 for r in list(smtp_server.received) if message_id_of(r.raw) == message_id)


def test_a_reply_whose_session_broke_after_data_is_looked_up_not_sent_again(mail_app, agent, dovecot, smtp_server,
                                                                            ticket_setup):
    """Two replies of one mailbox go out in one session; the server takes the first one's DATA and the
    session breaks before its 250 (the server restarts). The first stays "sending" (not queued for a blind
    retry); once its lease runs out the Sent Items lookup finds it and marks it sent. Each reply is
    accepted exactly once."""
    account_id, address, ticket_id, customer = ticket_setup
    client = mail_app.test_client()
    auth = api(mail_app, agent)
    first, second = (client.post(f"/api/v1/tickets/{ticket_id}/reply", headers=auth,
                                 json={"body_text": text}).get_json()["article_id"] for text in ("one", "two"))
    rt = mail_app.extensions["connector"]
    with rt.db.session() as session:
        ids = {a: session.scalar(select(OutboxItem.id).where(OutboxItem.article_id == a)) for a in (first, second)}
        mids = {a: session.get(Article, a).message_id for a in (first, second)}
    hook = CutAfterData(smtp_server)
    smtp_server.on_data = hook
    try:
        send_due(mail_app)
        wait_until(hook.restarted.is_set, timeout=30)
    finally:
        smtp_server.on_data = None
    assert hook.cut == [mids[first]]
    item = outbox_item(mail_app, first)
    assert item.state == "sending", (item.state, item.last_error)  # not "queued": it may have gone
    assert item.attempts == 1 and "Sent Items" in item.last_error
    assert outbox_item(mail_app, second).state in ("sent", "queued")  # a new session, or the server was down

    # Time passes: the lease runs out (and a retry would be due); the next round asks the sent folder.
    with rt.db.session() as session:
        session.execute(update(OutboxItem).where(OutboxItem.id.in_(ids.values()))
                        .values(lease_expires_at=utcnow() - timedelta(seconds=1),
                                next_attempt_at=utcnow() - timedelta(seconds=1)))
    send_due(mail_app)
    send_due(mail_app)
    item = outbox_item(mail_app, first)
    assert item.state == "sent" and "sent folder" in item.server_reply and item.last_error is None
    assert [accepted(smtp_server, mids[a]) for a in (first, second)] == [1, 1]
    assert len([m for m in dovecot.messages(customer)]) == 2



class DatabaseOutage:
    """The server's hook for the first message it takes: the installation's PostgreSQL database refuses
    connections and its sessions are cut before the 250 goes out, so the worker cannot record "sent"."""

    def __init__(self, postgres, database_url: str) -> None:
        from sqlalchemy.engine import make_url

        self.postgres, self.name = postgres, make_url(database_url).database
        self.taken: list[str] = []

    def __call__(self, received: Received) -> None:
        if self.taken:
            return
        self.taken.append(message_id_of(received.raw))
        self._sql(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false')
        self._sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{self.name}' "
                  "AND pid <> pg_backend_pid()")

    def end(self) -> None:
        self._sql(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')

    def _sql(self, statement: str) -> None:
        from sqlalchemy import text

        with self.postgres._engine.connect() as connection:
            connection.execute(text(statement))


@pytest.mark.backends("postgresql", reason="a database outage made with PostgreSQL's ALLOW_CONNECTIONS")
def test_a_database_outage_after_data_leaves_the_reply_to_the_lookup(mail_app, agent, dovecot, smtp_server,
                                                                    ticket_setup, postgres, database_url):
    """The database goes away between the server taking DATA and the worker recording "sent". The item was
    committed "sending" before its DATA was handed over, so the lost write cannot make it look unsent: once
    the database is back and the lease has run out, the sent-folder lookup finds it; accepted once."""
    account_id, address, ticket_id, customer = ticket_setup
    client = mail_app.test_client()
    article = client.post(f"/api/v1/tickets/{ticket_id}/reply", headers=api(mail_app, agent),
                          json={"body_text": "during an outage"}).get_json()["article_id"]
    rt = mail_app.extensions["connector"]
    with rt.db.session() as session:
        message_id = session.get(Article, article).message_id
    outage = DatabaseOutage(postgres, database_url)
    smtp_server.on_data = outage
    try:
        with pytest.raises(OperationalError):  # the worker's sender loop logs it and goes on next round
            send_due(mail_app)
    finally:
        smtp_server.on_data = None
        outage.end()
    assert outage.taken == [message_id]
    item = outbox_item(mail_app, article)
    assert item.state == "sending", item.state  # not "queued", whatever the lost write would have said
    with rt.db.session() as session:
        session.execute(update(OutboxItem).where(OutboxItem.article_id == article)
                        .values(lease_expires_at=utcnow() - timedelta(seconds=1),
                                next_attempt_at=utcnow() - timedelta(seconds=1)))
    send_due(mail_app)
    send_due(mail_app)
    item = outbox_item(mail_app, article)
    assert item.state == "sent" and "sent folder" in item.server_reply
    assert accepted(smtp_server, message_id) == 1
