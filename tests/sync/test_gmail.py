"""Gmail and Google Workspace mailboxes through the same worker, sync, tickets and outbox as Microsoft 365:
a Gmail-like Dovecot that checks XOAUTH2 at the Google stand-in's tokeninfo, a Gmail-like SMTP server that
files sent mail in "[Gmail]/Sent Mail", and a Microsoft 365 mailbox in the same app beside it.
"""
from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from sqlalchemy import select

from connector.mail.gmail import login_refusal
from connector.models import Account, OutboxItem, Ticket, utcnow
from connector.outbox import Sender
from connector.worker.oneshot import sync_once
from tests.support import gmail
from tests.support.app import login
from tests.support.gmail import gmail_smtp  # noqa: F401
from tests.support.google import gmail_dovecot, google, make_google_org  # noqa: F401
from tests.support.google_app import connect_google, register_google
from tests.support.mail import connect, make_mail

_n = itertools.count(1)


@pytest.fixture
def both_app(make_app, google, gmail_dovecot, gmail_smtp, dovecot, smtp_server):  # noqa: F811
    """The app with Microsoft's mail servers and Google's (the stand-ins) configured side by side."""
    return make_app(
        microsoft={"imap_host": "127.0.0.1", "imap_port": dovecot.imap_port,
                   "smtp_host": "127.0.0.1", "smtp_port": smtp_server.port},
        google={"authority": google.url, "imap_host": "127.0.0.1", "imap_port": gmail_dovecot.imap_port,
                "smtp_host": "127.0.0.1", "smtp_port": gmail_smtp.port})


@pytest.fixture
def gorg(make_google_org):  # noqa: F811
    return make_google_org()


def connect_gmail(app, gorg, ca, agent) -> tuple[int, str]:
    """Save the Google app (once) and connect a new Workspace mailbox through "Connect Google"."""
    rt = app.extensions["connector"]
    from connector import google_registration
    with rt.db.session() as session:
        registered = google_registration.stored(session) is not None
    if not registered:
        register_google(app, gorg)
    person = gorg.user(f"desk{next(_n)}")
    client = app.test_client()
    login(client, agent.email)
    response = connect_google(client, ca.ca_path, person.email)
    assert response.status_code == 302, response.get_data(as_text=True)
    with rt.db.session() as session:
        account = session.scalar(select(Account).where(Account.address == person.email))
        assert account.provider == "google"
        return account.id, account.address


def sync(app, address: str) -> list[str]:
    ok, lines = sync_once(app.extensions["connector"], "test-worker", address)
    return lines


def tickets(app, account_id: int) -> list[Ticket]:
    with app.extensions["connector"].db.session() as session:
        return list(session.scalars(select(Ticket).where(Ticket.account_id == account_id).order_by(Ticket.id)))


def reply(app, agent, ticket_id: int, text: str) -> int:
    from connector import users
    with app.extensions["connector"].db.session() as session:
        token = users.issue_api_token(session, session.get(type(agent), agent.id))
    response = app.test_client().post(f"/api/v1/tickets/{ticket_id}/reply", json={"body_text": text},
                                      headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()["article_id"]


def send_due(app) -> None:
    Sender(app.extensions["connector"], "test-sender").send_due(should_stop=lambda: False)


def item_of(app, article_id: int) -> OutboxItem:
    with app.extensions["connector"].db.session() as session:
        return session.scalar(select(OutboxItem).where(OutboxItem.article_id == article_id))


def test_gmail_and_microsoft_mailboxes_receive_and_reply_side_by_side(both_app, gorg, org, ca, agent, google,
                                                                       gmail_dovecot, gmail_smtp, dovecot,
                                                                       smtp_server):
    g_id, g_address = connect_gmail(both_app, gorg, ca, agent)
    m_id, m_address = connect(both_app, org, ca, agent)
    from connector import users
    with both_app.extensions["connector"].db.session() as session:
        api_token = users.issue_api_token(session, session.get(type(agent), agent.id))
    listed = both_app.test_client().get("/api/v1/accounts", headers={"Authorization": f"Bearer {api_token}"})
    assert {r["address"]: r["provider"] for r in listed.get_json()} == {g_address: "google", m_address: "microsoft"}
    customer = f"customer{next(_n)}@example.net"
    gmail_dovecot.deliver(g_address, make_mail(to=g_address, sender=customer, subject="Gmail question",
                                               message_id=f"<gq-{customer}>"))
    dovecot.deliver(m_address, make_mail(to=m_address, sender=customer, subject="Exchange question"))
    google.clear_log()
    sync(both_app, g_address)
    sync(both_app, m_address)
    assert [t.subject for t in tickets(both_app, g_id)] == ["Gmail question"]
    assert [t.subject for t in tickets(both_app, m_id)] == ["Exchange question"]
    assert google.calls("tokeninfo"), "Gmail's IMAP server did not check a Google token"

    g_ticket, m_ticket = tickets(both_app, g_id)[0], tickets(both_app, m_id)[0]
    g_article, m_article = reply(both_app, agent, g_ticket.id, "From Gmail."), \
        reply(both_app, agent, m_ticket.id, "From Exchange.")
    g_before, m_before = len(gmail_smtp.received), len(smtp_server.received)
    send_due(both_app)
    assert item_of(both_app, g_article).state == "sent" and item_of(both_app, m_article).state == "sent"
    [g_sent] = gmail_smtp.received[g_before:]
    [m_sent] = smtp_server.received[m_before:]
    assert (g_sent.auth_login, g_sent.mail_from, g_sent.rcpt_tos) == (g_address, g_address, [customer])
    assert m_sent.auth_login == m_address
    # Gmail filed the reply in Sent Mail; the customer answers it and the answer threads into the ticket
    with both_app.extensions["connector"].db.session() as session:
        from connector.models import Article
        our_id = session.get(Article, g_article).message_id
    assert our_id in [m["message_id"] for m in gmail.messages(gmail_dovecot, g_address, gmail.SENT_MAIL)]
    gmail_dovecot.deliver(g_address, make_mail(to=g_address, sender=customer, subject="Re: Gmail question",
                                               in_reply_to=our_id, references=our_id, body="Thanks"))
    sync(both_app, g_address)
    [ticket] = tickets(both_app, g_id)
    assert ticket.article_count == 3


def test_delete_after_import_moves_to_the_trash_and_move_labels(both_app, gorg, ca, agent, gmail_dovecot):
    g_id, g_address = connect_gmail(both_app, gorg, ca, agent)
    rt = both_app.extensions["connector"]
    with rt.db.session() as session:
        session.get(Account, g_id).post_import_action = "delete"
    gmail_dovecot.deliver(g_address, make_mail(to=g_address, subject="Trash me", message_id="<trash-me@x>"))
    sync(both_app, g_address)
    assert gmail.messages(gmail_dovecot, g_address) == []  # out of the inbox ...
    assert [m["message_id"] for m in gmail.messages(gmail_dovecot, g_address, "[Gmail]/Trash")] == ["<trash-me@x>"]

    with rt.db.session() as session:  # "move": Gmail's archive with a label
        account = session.get(Account, g_id)
        account.post_import_action, account.move_to_folder = "move", "Helpdesk"
    gmail_dovecot.deliver(g_address, make_mail(to=g_address, subject="Label me", message_id="<label-me@x>"))
    sync(both_app, g_address)
    assert gmail.messages(gmail_dovecot, g_address) == []
    assert [m["message_id"] for m in gmail.messages(gmail_dovecot, g_address, "Helpdesk")] == ["<label-me@x>"]
    assert len(tickets(both_app, g_id)) == 2


def test_after_a_crash_sent_mail_is_found_in_gmails_sent_mail(both_app, gorg, ca, agent, gmail_dovecot,
                                                              gmail_smtp):
    g_id, g_address = connect_gmail(both_app, gorg, ca, agent)
    gmail_dovecot.deliver(g_address, make_mail(to=g_address, subject="Crash"))
    sync(both_app, g_address)
    [ticket] = tickets(both_app, g_id)
    accepted = reply(both_app, agent, ticket.id, "a")
    send_due(both_app)
    lost = reply(both_app, agent, ticket.id, "b")
    with both_app.extensions["connector"].db.session() as session:  # taken by Gmail, then the worker died
        for article_id in (accepted, lost):
            item = session.scalar(select(OutboxItem).where(OutboxItem.article_id == article_id))
            item.state, item.lease_owner = "sending", "dead-worker"
            item.lease_expires_at = utcnow() - timedelta(seconds=1)
    before = len(gmail_smtp.received)
    send_due(both_app)
    assert item_of(both_app, accepted).state == "sent"
    assert "found in the sent folder" in item_of(both_app, accepted).server_reply
    assert item_of(both_app, lost).state == "sent"
    assert len(gmail_smtp.received) == before + 1  # only the one Gmail never took


def test_a_revoked_google_grant_stops_only_that_mailbox(both_app, gorg, org, ca, agent, google, gmail_dovecot,
                                                        dovecot):
    g_id, g_address = connect_gmail(both_app, gorg, ca, agent)
    m_id, m_address = connect(both_app, org, ca, agent)
    google.revoke(g_address, gorg.client_id)
    gmail_dovecot.deliver(g_address, make_mail(to=g_address, subject="Lost?"))
    dovecot.deliver(m_address, make_mail(to=m_address, subject="Still here"))
    lines = sync(both_app, g_address) + sync(both_app, m_address)
    with both_app.extensions["connector"].db.session() as session:
        google_box, microsoft_box = session.get(Account, g_id), session.get(Account, m_id)
        assert google_box.status == "needs_reconnect", lines
        assert "Google no longer accepts the mailbox's sign-in (invalid_grant)" in google_box.last_error
        assert "Reconnect the mailbox" in google_box.last_error
        assert microsoft_box.status == "connected"
    assert [t.subject for t in tickets(both_app, m_id)] == ["Still here"]
    assert tickets(both_app, g_id) == []


@pytest.mark.parametrize("server_text, expected", [
    ("[ALERT] Your account is not enabled for IMAP use. Please visit your Gmail settings page and enable your "
     "account for IMAP access. (Failure)", "Forwarding and POP/IMAP"),
    ("[ALERT] IMAP access is disabled for your domain. Please contact your domain administrator for questions "
     "about this feature. (Failure)", "POP and IMAP access"),
    ("[ALERT] Please log in via your web browser: https://support.google.com/mail/accounts/answer/78754 (Failure)",
     "sign in to Gmail in a browser"),
    ("[ALERT] Too many simultaneous connections. (Failure)", "15 at once"),
])
def test_gmails_refusals_are_told_in_words_and_not_retried_with_a_new_token(server_text, expected):
    refusal = login_refusal("desk@example.com", server_text)
    assert expected in str(refusal) and not refusal.auth_failed and refusal.retry_after


def test_a_plain_refused_gmail_sign_in_asks_for_a_fresh_token():
    refusal = login_refusal("desk@example.com", "[AUTHENTICATIONFAILED] Invalid credentials (Failure)")
    assert refusal.auth_failed and "Reconnect the mailbox" in str(refusal)


def test_imap_switched_off_in_gmail_is_an_error_in_words_retried_later(both_app, gorg, ca, agent, gmail_dovecot):
    """Gmail's own answer when IMAP is off (the Dovecot stand-in cannot say it): its alert is put on the real
    connection's login, and the worker's path does the rest."""
    from imapclient.exceptions import LoginError

    from connector.mail.gmail import GmailMailbox

    class ImapOff(GmailMailbox):
        def login(self, user: str, token: str) -> None:
            def refuse(*_args, **_kwargs):
                raise LoginError("[ALERT] Your account is not enabled for IMAP use. Please visit your Gmail "
                                 "settings page and enable your account for IMAP access. (Failure)")
            self.client.oauth2_login = refuse
            super().login(user, token)

    g_id, g_address = connect_gmail(both_app, gorg, ca, agent)
    rt = both_app.extensions["connector"]
    rt.servers.gmail_factory = ImapOff
    gmail_dovecot.deliver(g_address, make_mail(to=g_address, subject="Waiting for IMAP"))
    sync(both_app, g_address)
    with rt.db.session() as session:
        account = session.get(Account, g_id)
        assert account.status == "error" and "Forwarding and POP/IMAP" in account.last_error
        assert "Enable IMAP" in account.last_error
        assert account.next_attempt_at > utcnow() + timedelta(minutes=14)
    rt.servers.gmail_factory = GmailMailbox  # switched on again: the next pass reads the mail
    sync(both_app, g_address)
    with rt.db.session() as session:
        assert session.get(Account, g_id).status == "connected"
    assert [t.subject for t in tickets(both_app, g_id)] == ["Waiting for IMAP"]
