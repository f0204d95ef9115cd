"""Ticket numbers: 10001 on, one each, never twice. On SQLite one writer at a time takes max + 1; on
PostgreSQL several writers (workers, the web app) take them from a sequence without waiting."""
from __future__ import annotations

import pytest
from sqlalchemy import select, text

from connector import outbox, tickets, users
from connector.mail.parse import parse_message
from connector.models import Account, Ticket
from connector.ingest import FetchedMail, ingest
from tests.support.app import PASSWORD
from tests.support.mail import make_mail


def _accounts(rt, *addresses: str) -> list[int]:
    with rt.db.session() as session:
        accounts = [Account(address=address) for address in addresses]
        session.add_all(accounts)
        session.flush()
        return [a.id for a in accounts]


def _new_ticket(session, account_id: int, subject: str) -> int:
    account = session.get(Account, account_id)
    raw = make_mail(to=account.address, subject=subject)
    result = ingest(session, account, [FetchedMail(raw, parse_message(raw))])[0]
    assert result.outcome == "new_ticket"
    return result.ticket_id


def test_numbers_count_up_from_10001_whoever_opens_the_ticket(rt):
    (box,) = _accounts(rt, "desk@x.test")
    with rt.db.session() as session:
        author = users.create_user(session, "agent@x.test", PASSWORD, "agent")
        _new_ticket(session, box, "First")
        raws = [make_mail(to="desk@x.test", subject=f"Batch {i}") for i in range(3)]
        ingest(session, session.get(Account, box), [FetchedMail(raw, parse_message(raw), None) for raw in raws])
        outbox.open_outgoing_ticket(session, session.get(Account, box), author, "c@example.net", "Ours", "Hello.")
        _new_ticket(session, box, "Last")
    with rt.db.session() as session:
        assert session.scalars(select(Ticket.number).order_by(Ticket.id)).all() == list(range(10001, 10007))


@pytest.mark.backends("postgresql", reason="only PostgreSQL has concurrent writers")
def test_two_writers_take_numbers_without_waiting_for_each_other(rt):
    """A transaction that opened a ticket and has not committed yet must not hold up another one that opens
    a ticket (max(number) + 1 would give both the same number: the second would wait, then fail)."""
    one, two = _accounts(rt, "one@x.test", "two@x.test")
    first, second = rt.db.sessionmaker(), rt.db.sessionmaker()
    try:
        first_ticket = _new_ticket(first, one, "Still open")
        first.flush()
        second.execute(text("SET LOCAL lock_timeout = '5s'"))
        second_ticket = _new_ticket(second, two, "Meanwhile")
        with rt.db.session() as third:  # and an outgoing ticket from the web app, at the same time
            author = users.create_user(third, "agent@x.test", PASSWORD, "agent")
            third_ticket = outbox.open_outgoing_ticket(third, third.get(Account, two), author, "c@example.net",
                                                       "Ours", "Hello.").id
        second.commit()
        first.commit()
    finally:
        first.close()
        second.close()
    with rt.db.session() as session:
        numbers = {t.id: t.number for t in session.scalars(select(Ticket))}
    assert set(numbers) == {first_ticket, second_ticket, third_ticket}
    assert len(set(numbers.values())) == 3 and min(numbers.values()) >= 10001


def test_a_tag_or_search_with_more_digits_than_a_ticket_number_names_no_ticket(rt):
    """Ticket numbers are INTEGER: "[#123456789012]" in a subject (or a search) is text, not an error that
    fails the whole batch on PostgreSQL."""
    (box,) = _accounts(rt, "desk@x.test")
    with rt.db.session() as session:
        admin = users.create_user(session, "admin@x.test", PASSWORD, "admin")
        ticket_id = _new_ticket(session, box, "Re: about [#123456789012] and [#99999999999999]")
        found = [t.id for t in tickets.search_tickets(session, admin, q="#123456789012").items]
        assert found == [ticket_id]  # by the subject's text
