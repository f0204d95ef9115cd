"""A shared mailbox added by a delegate: the token is the delegate's, the IMAP/SMTP login is the shared address,
and the delegate's Full Access is proven by a real sign-in to Dovecot before anything is stored.

Dovecot asks the test IdP whether the token's owner has Full Access to the login name (as Exchange checks it at
AUTHENTICATE); the SMTP server asks it for Send As. Shared addresses are fresh per test: any address works.
"""
from __future__ import annotations

import html
import itertools
import json
import re

import pytest
from sqlalchemy import select

from connector import outbox
from connector.models import Account, AccountMember, OutboxItem, Ticket
from connector.outbox import Sender
from tests.support.app import connect_mailbox, login, reconnect_mailbox
from tests.support.mail import connect, counts, make_mail, register, run_pass
from tests.support.net import free_port

_n = itertools.count(1)


@pytest.fixture
def shared(org) -> str:
    return f"team{next(_n)}@{org.domain}"


@pytest.fixture
def delegate(org, idp):
    """delegate(shared, full_access=True, send_as=False) -> the address of a new IdP user with those rights."""
    def create(shared: str | None = None, *, full_access: bool = True, send_as: bool = False) -> str:
        email = org.add_user(f"delegate{next(_n)}")
        if shared and full_access:
            idp.grant_mailbox_access(email, shared)
        if shared and send_as:
            idp.grant_send_as(email, shared)
        return email
    return create


def _local(email: str) -> str:
    return email.split("@")[0]


def _accounts(app) -> list[Account]:
    with app.extensions["connector"].db.session() as session:
        return list(session.scalars(select(Account).order_by(Account.id)))


def _members(app) -> list[tuple[int, int]]:
    with app.extensions["connector"].db.session() as session:
        return [(m.account_id, m.user_id) for m in session.scalars(select(AccountMember))]


def _refresh_tokens(app, account_id: int) -> set[str]:
    rt = app.extensions["connector"]
    with rt.db.session() as session:
        cache = json.loads(rt.vault.decrypt_text(session.get(Account, account_id).token_cache_enc))
    return {entry["secret"] for entry in cache.get("RefreshToken", {}).values()}


def _refusal(response) -> str:
    page = response.get_data(as_text=True)
    assert response.status_code == 403, page
    match = re.search(r'<p class="problem" role="alert" id="connect-error">(.*?)</p>', page, re.S)
    assert match, page
    return html.unescape(match.group(1))


def _signed_in(app, user):
    client = app.test_client()
    assert login(client, user.email).status_code == 302
    return client


def no_full_access(delegate: str, shared: str) -> str:
    return (f"{delegate} has no Full Access to {shared}: an Exchange admin grants it with Add-MailboxPermission "
            f"-Identity {shared} -User {delegate} -AccessRights FullAccess, then connect again.")


def test_a_delegate_with_full_access_connects_reads_and_answers(mail_app, org, ca, agent, idp, delegate, shared,
                                                                dovecot, smtp_server):
    who = delegate(shared, send_as=True)
    account_id, address = connect(mail_app, org, ca, agent, local=_local(who), mailbox=shared)
    assert address == shared
    rt = mail_app.extensions["connector"]
    with rt.db.session() as session:
        account = session.get(Account, account_id)
        assert (account.token_owner, account.connected_by_id, account.display_name) == (who, agent.id, shared)
        assert (account.token_subject, account.tenant_id) == (idp.users[who].oid, org.tenant_id)
    subject = f"Shared question {next(_n)}"
    dovecot.deliver(shared, make_mail(to=shared, subject=subject, sender="client@example.net"))
    assert run_pass(mail_app, account_id).imported == 1
    with rt.db.session() as session:
        ticket = session.scalar(select(Ticket).where(Ticket.subject == subject))
        user = session.get(type(agent), agent.id)
        article_id = outbox.queue_reply(session, session.get(Ticket, ticket.id), user, "We are on it.").id
    before = len(smtp_server.received)
    Sender(rt, "test").send_due(lambda: False)
    with rt.db.session() as session:
        assert session.scalar(select(OutboxItem.state).where(OutboxItem.article_id == article_id)) == "sent"
    [received] = smtp_server.received[before:]
    assert received.auth_login == shared and received.mail_from == shared


def test_a_delegate_without_full_access_stores_nothing_and_is_told_why(mail_app, org, ca, agent, idp, delegate,
                                                                        shared, dovecot):
    register(mail_app, org)
    who = delegate(shared, full_access=False)
    client = _signed_in(mail_app, agent)
    assert _refusal(connect_mailbox(client, ca.ca_path, who, mailbox=shared)) == no_full_access(who, shared)
    assert _accounts(mail_app) == [] and _members(mail_app) == []
    assert shared not in client.get("/accounts").get_data(as_text=True)

    idp.grant_mailbox_access(who, shared)  # the fix the sentence names
    assert connect_mailbox(client, ca.ca_path, who, mailbox=shared).status_code == 302
    assert [(a.address, a.token_owner) for a in _accounts(mail_app)] == [(shared, who)]


def test_a_name_typed_for_someone_elses_own_mailbox_is_refused_too(mail_app, org, ca, agent, delegate, dovecot):
    """"Connect a shared mailbox" with a colleague's address: no delegation, no mailbox."""
    register(mail_app, org)
    colleague = org.add_user(f"colleague{next(_n)}")
    who = delegate()
    client = _signed_in(mail_app, agent)
    assert _refusal(connect_mailbox(client, ca.ca_path, who, mailbox=colleague)) == no_full_access(who, colleague)
    assert _accounts(mail_app) == []


def test_full_access_without_send_as_cannot_answer(mail_app, org, ca, agent, idp, delegate, shared, dovecot,
                                                   smtp_server):
    who = delegate(shared)  # Full Access only, as at Exchange it does not include Send As
    account_id, _ = connect(mail_app, org, ca, agent, local=_local(who), mailbox=shared)
    dovecot.deliver(shared, make_mail(to=shared, subject="Needs an answer"))
    run_pass(mail_app, account_id)
    rt = mail_app.extensions["connector"]
    with rt.db.session() as session:
        ticket = session.scalar(select(Ticket).where(Ticket.account_id == account_id))
        article_id = outbox.queue_reply(session, ticket, session.get(type(agent), agent.id), "Hello").id
    before = len(smtp_server.received)
    Sender(rt, "test").send_due(lambda: False)
    with rt.db.session() as session:
        item = session.scalar(select(OutboxItem).where(OutboxItem.article_id == article_id))
        assert item.state == "failed"
        assert item.last_error.startswith(f"The signed-in user may not send as {shared} (554 5.2.0 SendAsDenied)")
    assert len(smtp_server.received) == before


def test_an_existing_shared_mailbox_changes_only_with_proven_access(mail_app, org, ca, make_user, idp, delegate,
                                                                    shared, dovecot):
    owner, other = make_user("agent"), make_user("agent")
    first = delegate(shared)
    account_id, _ = connect(mail_app, org, ca, owner, local=_local(first), mailbox=shared)
    tokens = _refresh_tokens(mail_app, account_id)
    client = _signed_in(mail_app, other)

    outsider = delegate(shared, full_access=False)
    assert _refusal(connect_mailbox(client, ca.ca_path, outsider, mailbox=shared)) == no_full_access(outsider, shared)
    assert _members(mail_app) == [] and _refresh_tokens(mail_app, account_id) == tokens

    colleague = delegate(shared)  # proven: the other agent may read it, but the owner's sign-in stays
    assert connect_mailbox(client, ca.ca_path, colleague, mailbox=shared).status_code == 302
    assert "you proved your access and can see its tickets" in client.get("/accounts").get_data(as_text=True)
    assert _members(mail_app) == [(account_id, other.id)]
    [account] = _accounts(mail_app)
    assert (account.token_owner, account.connected_by_id) == (first, owner.id)
    assert _refresh_tokens(mail_app, account_id) == tokens

    owner_client = _signed_in(mail_app, owner)  # the owner's Reconnect with another delegate proves it again
    assert _refusal(reconnect_mailbox(owner_client, ca.ca_path, account_id, outsider)) == \
        no_full_access(outsider, shared)
    assert _accounts(mail_app)[0].token_owner == first
    assert reconnect_mailbox(owner_client, ca.ca_path, account_id, colleague).status_code == 302
    [account] = _accounts(mail_app)
    assert (account.token_owner, account.token_subject) == (colleague, idp.users[colleague].oid)
    assert account.connected_by_id == owner.id and _refresh_tokens(mail_app, account_id).isdisjoint(tokens)


def test_full_access_removed_later_stops_the_sync_with_a_sentence(mail_app, org, ca, agent, idp, delegate, shared,
                                                                  dovecot):
    who = delegate(shared)
    account_id, _ = connect(mail_app, org, ca, agent, local=_local(who), mailbox=shared)
    dovecot.deliver(shared, make_mail(to=shared, subject="Before"))
    assert run_pass(mail_app, account_id).imported == 1
    idp.remove_mailbox_access(who, shared)
    dovecot.deliver(shared, make_mail(to=shared, subject="After"))
    with pytest.raises(Exception) as caught:
        run_pass(mail_app, account_id)
    assert "Full Access" in str(caught.value)
    assert counts(mail_app, account_id) == (1, 1)


def test_when_the_mail_server_cannot_be_reached_nothing_is_stored(make_app, org, ca, agent, delegate, shared):
    app = make_app(microsoft={"imap_host": "127.0.0.1", "imap_port": free_port()})
    register(app, org)
    who = delegate(shared)
    message = _refusal(connect_mailbox(_signed_in(app, agent), ca.ca_path, who, mailbox=shared))
    assert message.startswith(f"The access of {who} to {shared} could not be checked, so nothing was stored: "
                              "Cannot reach the IMAP server 127.0.0.1:")
    assert message.endswith("Try again in a few minutes.")
    assert _accounts(app) == [] and _members(app) == []
