"""Mail for tests: build RFC 5322 messages, connect a mailbox end to end, wait for tickets."""
from __future__ import annotations

import itertools
import time
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from datetime import datetime, timezone

from sqlalchemy import func, select

from connector import registration
from connector.models import Account, Article, Ticket
from tests.support.app import connect_mailbox, login

_n = itertools.count(1)


def make_mail(*, to: str, sender: str = "customer@example.net", subject: str | None = None, body: str = "Hello",
              message_id: str | None = None, in_reply_to: str | None = None, references: str | None = None,
              html: str | None = None, headers: dict | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Customer <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject if subject is not None else f"Question {next(_n)}"
    msg["Date"] = format_datetime(datetime.now(timezone.utc))
    msg["Message-ID"] = message_id or make_msgid(domain="example.net")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    if html:
        msg.add_alternative(html, subtype="html")
    return msg.as_bytes()


def register(app, org) -> None:
    rt = app.extensions["connector"]
    with rt.db.session() as session:
        registration.save(session, rt.settings, rt.vault, client_id=org.client_id, tenant=org.tenant_id,
                          client_secret=org.secret, secret_expires_on=None, by="test")


def connect(app, org, ca, user, local: str | None = None, mailbox: str | None = None) -> tuple[int, str]:
    """Register the Azure app (once) and connect a mailbox as `user`: the IdP user `local` (added unless it
    exists), or with `mailbox` the shared mailbox it has Full Access to. Returns (account id, address)."""
    rt = app.extensions["connector"]
    with rt.db.session() as session:
        if registration.stored(session) is None:
            registration.save(session, rt.settings, rt.vault, client_id=org.client_id, tenant=org.tenant_id,
                              client_secret=org.secret, secret_expires_on=None, by="test")
    local = local or f"box{next(_n)}"
    address = f"{local}@{org.domain}"
    if address.lower() not in org.idp.users:
        org.add_user(local)
    client = app.test_client()
    login(client, user.email)
    response = connect_mailbox(client, org.ca_path if hasattr(org, "ca_path") else ca.ca_path, address,
                               mailbox=mailbox)
    assert response.status_code == 302, response.get_data(as_text=True)
    with rt.db.session() as session:
        account = session.scalar(select(Account).where(Account.address == (mailbox or address)))
        return account.id, account.address


def counts(app, account_id: int) -> tuple[int, int]:
    """(tickets, articles) of a mailbox."""
    rt = app.extensions["connector"]
    with rt.db.session() as session:
        tickets = session.scalar(select(func.count()).select_from(Ticket).where(Ticket.account_id == account_id))
        articles = session.scalar(select(func.count()).select_from(Article).where(Article.account_id == account_id))
        return tickets, articles


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def run_pass(app, account_id: int):
    """One sync pass of one mailbox, as the worker runs it; returns the PassResult."""
    from connector.sync import AccountSync

    sync = AccountSync(app.extensions["connector"], account_id)
    try:
        return sync.run_pass()
    finally:
        sync.close()
