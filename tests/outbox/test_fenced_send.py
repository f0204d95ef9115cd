"""The outbox across workers: an item is claimed with a fenced lease, so a worker whose claim was recovered
by another cannot send it or mark it; two senders at once submit each reply exactly once."""
from __future__ import annotations

import threading

from sqlalchemy import select, update

from connector import outbox, users
from connector.ingest import FetchedMail, ingest
from connector.mail.parse import parse_message
from connector.models import Account, OutboxItem, utcnow
from connector.outbox import Sender, lease
from tests.support.app import PASSWORD
from tests.support.fake_mail import FakeServers
from tests.support.mail import make_mail


def queued_replies(rt, count: int) -> list[int]:
    with rt.db.session() as session:
        agent = users.create_user(session, "sender-test@helpdesk.test", PASSWORD, "admin")
        account = Account(address="desk@fake.test", token_cache_enc=b"unused")
        session.add(account)
        session.flush()
        raw = make_mail(to=account.address, subject="Please answer")
        ticket_id = ingest(session, account, [FetchedMail(raw, parse_message(raw))])[0].ticket_id
        from connector.models import Ticket
        ticket = session.get(Ticket, ticket_id)
        for i in range(count):
            outbox.queue_reply(session, ticket, agent, f"Answer {i}")
            session.flush()
            session.refresh(ticket)
        session.flush()
        return list(session.scalars(select(OutboxItem.id).order_by(OutboxItem.id)))


def test_a_recovered_claim_cannot_be_sent_or_marked_by_its_first_owner(app):
    rt = app.extensions["connector"]
    [item_id] = queued_replies(rt, 1)
    with rt.db.sessionmaker() as session:
        first = lease.claim(session, item_id, "worker-a", 60)
        assert first is not None and lease.claim(session, item_id, "worker-b", 60) is None
        session.execute(update(OutboxItem).where(OutboxItem.id == item_id)
                        .values(lease_expires_at=utcnow().replace(year=2000)))
        session.commit()
        second = lease.claim(session, item_id, "worker-b", 60, stale=True)  # recovery after A "crashed"
        assert second == first + 1
        assert not lease.renew(session, item_id, "worker-a", first, 60)  # A must not hand it to the server
        assert not lease.write(session, item_id, "worker-a", first, state="sent")
        item = session.get(OutboxItem, item_id)
        assert (item.state, item.lease_owner) == ("sending", "worker-b")


def test_two_senders_submit_each_reply_exactly_once(app):
    rt = app.extensions["connector"]
    rt.servers = FakeServers()
    items = queued_replies(rt, 12)
    senders = [Sender(rt, f"sender-{i}") for i in range(2)]
    threads = [threading.Thread(target=s.send_due, args=(lambda: False,)) for s in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    submitted = [raw for _, raw in rt.servers.submitted]
    assert len(submitted) == len(items) == len(set(submitted))
    with rt.db.session() as session:
        assert set(session.scalars(select(OutboxItem.state))) == {"sent"}
