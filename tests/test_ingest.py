"""`ingest`, the one import path: the rules (dedup, threading by References and by tag, reopening, loop and
auto-reply protection) hold, and a batch gives exactly what the same mails give as batches of one, in
order: the same outcomes, tickets, threading, statuses and articles."""
from __future__ import annotations

from sqlalchemy import select

from connector.ingest import FetchedMail, ingest
from connector.mail.parse import parse_message
from connector.models import Account, Article, Ticket
from tests.support.mail import make_mail

BOX = "desk@company.test"


def mails() -> list[bytes]:
    first = make_mail(to=BOX, subject="Broken screen", message_id="<a1@x>", sender="ann@example.net")
    return [
        first,
        make_mail(to=BOX, subject="Re: Broken screen", message_id="<a2@x>", in_reply_to="<a1@x>",
                  references="<a1@x>", sender="ann@example.net"),                     # threads in the same batch
        first,                                                                       # duplicate in the batch
        make_mail(to=BOX, subject="Another [#10001]", message_id="<b1@x>", sender="bob@example.net"),  # by tag
        make_mail(to=BOX, subject="Out of office", message_id="<c1@x>", in_reply_to="<a2@x>",
                  headers={"Auto-Submitted": "auto-replied"}),                          # auto-reply
        make_mail(to=BOX, sender=BOX, subject="Note to self", message_id="<d1@x>"),      # own loop: ignored
        make_mail(to=BOX, subject="Fresh", message_id="<e1@x>", sender="eve@example.net",
                  references="<unknown@elsewhere> <a1@x>"),                               # by References
        make_mail(to=BOX, subject="Plain new", message_id="<f1@x>", sender="fay@example.net"),
        make_mail(to=BOX, subject="Closed one", message_id="<g1@x>", sender="gus@example.net"),
    ]


def snapshot(session, account_id):
    rows = session.scalars(select(Ticket).where(Ticket.account_id == account_id).order_by(Ticket.number)).all()
    return [(t.number, t.subject, t.status, t.customer_address, t.article_count,
             [(a.message_id, a.direction, a.from_addr, a.subject, a.is_auto, a.body_text,
               [(x.filename, x.blob_sha256) for x in a.attachments])
              for a in session.scalars(select(Article).where(Article.ticket_id == t.id).order_by(Article.id))])
            for t in rows]


def run(app, batch: bool):
    rt = app.extensions["connector"]
    raws = mails()
    with rt.db.session() as session:
        account = Account(address=BOX)
        session.add(account)
        session.flush()
        # a closed ticket exists before the batch: a customer's reply reopens it
        seed = make_mail(to=BOX, subject="Old case", message_id="<old@x>", sender="gus@example.net")
        ingest(session, account, [FetchedMail(seed, parse_message(seed))])
        session.scalar(select(Ticket).where(Ticket.account_id == account.id)).status = "closed"
        raws[-1] = make_mail(to=BOX, subject="Re: Old case", message_id="<g1@x>", in_reply_to="<old@x>",
                             sender="gus@example.net")
        mails_ = [FetchedMail(raw, parse_message(raw), uid) for uid, raw in enumerate(raws, start=1)]
        if batch:
            outcomes = [r.outcome for r in ingest(session, account, mails_)]
            session.expire_all()
        else:
            outcomes = [ingest(session, account, [mail])[0].outcome for mail in mails_]
        session.flush()
        return outcomes, snapshot(session, account.id)


def test_a_batch_gives_what_batches_of_one_give(make_app, make_database_url):
    single = make_app(database={"url": make_database_url("one")})
    batched = make_app(database={"url": make_database_url("batch")})
    one_outcomes, one_state = run(single, batch=False)
    batch_outcomes, batch_state = run(batched, batch=True)
    assert one_outcomes == ["new_ticket", "follow_up", "duplicate", "follow_up", "follow_up", "ignored",
                            "follow_up", "new_ticket", "follow_up"]
    assert batch_outcomes == one_outcomes
    assert batch_state == one_state
    statuses = {t[1]: t[2] for t in one_state}
    assert statuses["Old case"] == "open"  # reopened by the customer's reply
