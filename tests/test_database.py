"""What the two databases store differently underneath, and must not show: NUL characters in text."""
from __future__ import annotations

from sqlalchemy import select

from connector.mail.parse import parse_headers, parse_message
from connector.models import Account, Article, Ticket
from connector.ingest import FetchedMail, ingest

NUL_MAIL = (b"From: Ann <ann@example.net>\r\nTo: desk@x.test\r\nSubject: Broken\x00subject\r\n"
            b"Message-ID: <nul\x00id@example.net>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            b"A body with a \x00 in it.\r\n")


def test_text_with_nul_characters_is_stored_and_found_again(rt):
    """PostgreSQL refuses NUL in text (SQLite would keep it): the mail must still become a ticket, once, and
    read the same on both."""
    with rt.db.session() as session:
        account = Account(address="desk@x.test")
        session.add(account)
        session.flush()
        first = ingest(session, account, [FetchedMail(NUL_MAIL, parse_message(NUL_MAIL))])[0]
        again = ingest(session, account, [FetchedMail(NUL_MAIL, parse_headers(NUL_MAIL), 2)])[0]
    assert first.outcome == "new_ticket" and again.outcome == "duplicate"  # the Message-ID still matches
    nul = "\ufffd"  # on both databases, so that both find the same
    with rt.db.session() as session:
        article = session.scalar(select(Article))
        assert (article.subject, article.body_text.strip()) == (f"Broken{nul}subject", f"A body with a {nul} in it.")
        assert session.scalar(select(Ticket.subject)) == f"Broken{nul}subject"


def test_any_other_text_with_nul_is_stored_too(rt):
    """Text from elsewhere (here an agent's new outgoing mail) reaches PostgreSQL as U+FFFD, not as an error."""
    from connector import outbox, users

    with rt.db.session() as session:
        account = Account(address="desk@x.test")
        session.add(account)
        author = users.create_user(session, "agent@x.test", "correct horse battery", "agent")
        ticket = outbox.open_outgoing_ticket(session, account, author, "c@example.net", "Hi", "Odd \x00 paste.")
        ticket_id = ticket.id
    with rt.db.session() as session:
        body = session.scalar(select(Article.body_text).where(Article.ticket_id == ticket_id))
    assert body == ("Odd \ufffd paste." if rt.db.engine.dialect.name == "postgresql" else "Odd \x00 paste.")


def test_times_are_kept_as_naive_utc(rt):
    """A mail's Date in another zone is stored in UTC, and comes back exactly, whatever the server's own time
    zone (the test PostgreSQL runs in Pacific/Chatham, +13:45)."""
    from datetime import datetime

    raw = (b"From: ann@example.net\r\nTo: desk@x.test\r\nSubject: When\r\nMessage-ID: <when@example.net>\r\n"
           b"Date: Tue, 01 Dec 2026 10:00:00 +0500\r\n\r\nBody\r\n")
    with rt.db.session() as session:
        account = Account(address="desk@x.test")
        session.add(account)
        session.flush()
        ingest(session, account, [FetchedMail(raw, parse_message(raw))])[0]
    with rt.db.session() as session:
        article = session.scalar(select(Article))
        assert article.date == datetime(2026, 12, 1, 5, 0) and article.date.tzinfo is None
        assert abs((article.created_at - datetime.utcnow()).total_seconds()) < 120
