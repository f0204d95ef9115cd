"""A shared mailbox added by a delegate: the token is the delegate's, the IMAP/SMTP login is the shared address."""
from __future__ import annotations

import itertools

import pytest
from sqlalchemy import select

from connector.models import Account, OutboxItem, Ticket
from connector.outbox import Sender
from connector.sync import AccountSync
from tests.conftest import TEST_BASE_URL
from tests.support.app import Org
from tests.support.mail import connect, counts, make_mail, run_pass

SHARED = "shared@contoso.test"
_n = itertools.count(1)


@pytest.fixture
def contoso(idp) -> Org:
    """The tenant that owns the shared mailboxes the test Dovecot knows (see SHARED_MAILBOXES)."""
    tenant = idp.tenants.get("contoso.test") or idp.add_tenant("contoso.test")
    secret = f"contoso-secret-{next(_n)}"
    app = idp.add_app(tenant, secret=secret, redirect_uris=[f"{TEST_BASE_URL}/auth/microsoft/callback"])
    return Org(idp, tenant, app, secret, "contoso.test")


def test_delegate_reads_and_answers_for_the_shared_mailbox(mail_app, contoso, ca, agent, dovecot, smtp_server, idp):
    delegate = f"delegate{next(_n)}"
    account_id, address = connect(mail_app, contoso, ca, agent, local=delegate, mailbox=SHARED)
    idp.grant_mailbox_access(f"{delegate}@contoso.test", SHARED)
    assert address == SHARED
    rt = mail_app.extensions["connector"]
    with rt.db.session() as session:
        account = session.get(Account, account_id)
        assert account.token_owner == f"{delegate}@contoso.test"
    subject = f"Shared question {next(_n)}"
    dovecot.deliver(SHARED, make_mail(to=SHARED, subject=subject, sender="client@example.net"))
    result = run_pass(mail_app, account_id)
    assert result.imported >= 1  # the shared mailbox may hold mail of earlier tests in this session
    with rt.db.session() as session:
        ticket = session.scalar(select(Ticket).where(Ticket.subject == subject))
        from connector import outbox
        user = session.get(type(agent), agent.id)
        article = outbox.queue_reply(session, session.get(Ticket, ticket.id), user, "We are on it.")
        article_id = article.id
    before = len(smtp_server.received)
    Sender(rt, "test").send_due(lambda: False)
    with rt.db.session() as session:
        assert session.scalar(select(OutboxItem.state).where(OutboxItem.article_id == article_id)) == "sent"
    [received] = smtp_server.received[before:]
    assert received.auth_login == SHARED and received.mail_from == SHARED


def test_delegate_without_access_gets_an_explanation(mail_app, contoso, ca, agent, dovecot):
    account_id, address = connect(mail_app, contoso, ca, agent, local=f"outsider{next(_n)}", mailbox=SHARED)
    rt = mail_app.extensions["connector"]
    sync = AccountSync(rt, account_id)
    with pytest.raises(Exception) as caught:
        sync.run_pass()
    assert "Full Access" in str(caught.value)
    assert counts(mail_app, account_id) == (0, 0)
