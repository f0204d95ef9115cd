"""Replies go out over a real SMTP server with STARTTLS and XOAUTH2, through the durable outbox."""
from __future__ import annotations

import itertools
from email import message_from_bytes, policy
from datetime import timedelta

import pytest
from sqlalchemy import select

from connector import outbox, users
from connector.mail.compose import ComposeError
from connector.models import Account, Article, OutboxItem, Ticket, utcnow
from connector.outbox import Sender
from tests.support.app import csrf_token, login
from tests.support.mail import connect, make_mail, run_pass

_customers = itertools.count(1)


def send_due(app) -> bool:
    sender = Sender(app.extensions["connector"], "test-sender")
    return sender.send_due(should_stop=lambda: False)


@pytest.fixture
def ticket_setup(mail_app, org, ca, agent, dovecot):
    """A mailbox with one customer ticket; returns (account id, address, ticket id, customer address)."""
    account_id, address = connect(mail_app, org, ca, agent)
    customer = f"customer-{next(_customers)}@example.net"  # Dovecot lives for the whole session
    dovecot.deliver(address, make_mail(to=address, sender=customer, subject="Order missing",
                                       message_id=f"<order-{customer}>", body="Where is it?"))
    run_pass(mail_app, account_id)
    with mail_app.extensions["connector"].db.session() as session:
        ticket = session.scalar(select(Ticket).where(Ticket.account_id == account_id))
        return account_id, address, ticket.id, customer


def api(app, user):
    with app.extensions["connector"].db.session() as session:
        token = users.issue_api_token(session, session.get(type(user), user.id))
    return {"Authorization": f"Bearer {token}"}


def outbox_item(app, article_id) -> OutboxItem:
    with app.extensions["connector"].db.session() as session:
        return session.scalar(select(OutboxItem).where(OutboxItem.article_id == article_id))


def test_reply_reaches_the_customer_threaded_and_the_answer_comes_back(mail_app, agent, dovecot, smtp_server,
                                                                        ticket_setup):
    account_id, address, ticket_id, customer = ticket_setup
    client = mail_app.test_client()
    response = client.post(f"/api/v1/tickets/{ticket_id}/reply", headers=api(mail_app, agent),
                           json={"body_text": "It ships today.", "cc": ["boss@example.net"]})
    assert response.status_code == 202
    article_id = response.get_json()["article_id"]
    assert outbox_item(mail_app, article_id).state == "queued"  # stored before any network call
    before = len(smtp_server.received)
    assert send_due(mail_app)
    item = outbox_item(mail_app, article_id)
    assert item.state == "sent" and item.server_reply.startswith("2")
    [received] = smtp_server.received[before:]
    assert received.auth_login == address and received.mail_from == address
    assert sorted(received.rcpt_tos) == sorted([customer, "boss@example.net"])

    delivered = [m for m in dovecot.messages(customer)]
    assert len(delivered) == 1
    mail = message_from_bytes(received.raw, policy=policy.default)
    with mail_app.extensions["connector"].db.session() as session:
        ticket = session.get(Ticket, ticket_id)
        out = session.get(Article, article_id)
        assert mail["From"].addresses[0].addr_spec == address
        assert f"[#{ticket.number}]" in mail["Subject"] and mail["Subject"].startswith("Re: Order missing")
        assert mail["In-Reply-To"] == f"<order-{customer}>"
        assert f"<order-{customer}>" in mail["References"]
        assert mail["Message-ID"] == out.message_id == delivered[0]["message_id"]
        assert mail["Auto-Submitted"] is None
        assert mail.get_body(("plain",)).get_content().strip() == "It ships today."
        assert mail.get_body(("html",)) is not None
        our_id = out.message_id

    # the customer answers our reply: it lands on the same ticket
    dovecot.deliver(address, make_mail(to=address, sender=customer, subject=str(mail["Subject"]),
                                       in_reply_to=our_id, references=our_id, body="Thanks!"))
    run_pass(mail_app, account_id)
    detail = client.get(f"/api/v1/tickets/{ticket_id}", headers=api(mail_app, agent)).get_json()
    assert [a["direction"] for a in detail["articles"]] == ["in", "out", "in"]
    assert detail["articles"][1]["delivery"] == "sent"
    assert detail["article_count"] == 3 and detail["status"] == "open"


def test_smtp_down_keeps_the_reply_queued_then_delivers_it_exactly_once(mail_app, agent, dovecot, smtp_server,
                                                                         ticket_setup):
    account_id, address, ticket_id, customer = ticket_setup
    client = mail_app.test_client()
    article_id = client.post(f"/api/v1/tickets/{ticket_id}/reply", headers=api(mail_app, agent),
                             json={"body_text": "Down?"}).get_json()["article_id"]
    smtp_server.stop()
    try:
        send_due(mail_app)
        item = outbox_item(mail_app, article_id)
        assert item.state == "queued" and item.attempts == 1
        assert "Cannot reach the SMTP server" in item.last_error
        assert item.next_attempt_at > utcnow()
        detail = client.get(f"/api/v1/tickets/{ticket_id}", headers=api(mail_app, agent)).get_json()
        assert detail["articles"][-1]["delivery"] == "queued"
        login(client, agent.email)
        assert "Cannot reach the SMTP server" in client.get(f"/tickets/{ticket_id}").get_data(as_text=True)
    finally:
        smtp_server.start()
    send_due(mail_app)  # not due yet: backoff
    assert outbox_item(mail_app, article_id).state == "queued"
    with mail_app.extensions["connector"].db.session() as session:
        session.scalar(select(OutboxItem).where(OutboxItem.article_id == article_id)).next_attempt_at = utcnow()
    send_due(mail_app)
    send_due(mail_app)
    assert outbox_item(mail_app, article_id).state == "sent"
    assert len(dovecot.messages(customer)) == 1


@pytest.mark.parametrize("code, message, stage, sentence", [
    (535, "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox", "auth",
     "SMTP AUTH is disabled"),
    (554, "5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied", "data",
     "may not send as"),
    (535, "5.7.3 Authentication unsuccessful", "auth", "reconnect the mailbox"),
    (552, "5.3.4 Message size exceeds fixed maximum message size", "data", "too large"),
])
def test_permanent_smtp_errors_are_explained_and_can_be_retried(mail_app, agent, dovecot, smtp_server, ticket_setup,
                                                                code, message, stage, sentence):
    account_id, address, ticket_id, customer = ticket_setup
    client = mail_app.test_client()
    article_id = client.post(f"/api/v1/tickets/{ticket_id}/reply", headers=api(mail_app, agent),
                             json={"body_text": "Try me"}).get_json()["article_id"]
    smtp_server.fail_next(code, message, stage=stage)
    assert not send_due(mail_app)
    item = outbox_item(mail_app, article_id)
    assert item.state == "failed" and sentence in item.last_error
    login(client, agent.email)
    page = client.get(f"/tickets/{ticket_id}").get_data(as_text=True)
    assert sentence in page and "Retry" in page
    client.post(f"/tickets/{ticket_id}/articles/{article_id}/retry", data={"csrf_token": csrf_token(page)})
    send_due(mail_app)
    assert outbox_item(mail_app, article_id).state == "sent"
    assert len(dovecot.messages(customer)) == 1


def test_one_connection_serves_a_burst(mail_app, agent, smtp_server, ticket_setup):
    account_id, address, ticket_id, customer = ticket_setup
    client = mail_app.test_client()
    for i in range(3):
        client.post(f"/api/v1/tickets/{ticket_id}/reply", headers=api(mail_app, agent), json={"body_text": f"{i}"})
    auths = smtp_server.auth_count
    send_due(mail_app)
    assert smtp_server.auth_count == auths + 1


def test_crash_after_submission_does_not_send_twice(mail_app, agent, dovecot, smtp_server, ticket_setup):
    """An item left in "sending" by a crash: found in the sent folder means sent; else it is sent again."""
    account_id, address, ticket_id, customer = ticket_setup
    client = mail_app.test_client()
    auth = api(mail_app, agent)
    accepted = client.post(f"/api/v1/tickets/{ticket_id}/reply", headers=auth, json={"body_text": "a"}).get_json()
    send_due(mail_app)
    lost = client.post(f"/api/v1/tickets/{ticket_id}/reply", headers=auth, json={"body_text": "b"}).get_json()
    rt = mail_app.extensions["connector"]
    with rt.db.session() as session:  # simulate: accepted by the server, then the worker died before "sent"
        for article_id in (accepted["article_id"], lost["article_id"]):
            item = session.scalar(select(OutboxItem).where(OutboxItem.article_id == article_id))
            item.state, item.lease_owner = "sending", "dead-worker"
            item.lease_expires_at = utcnow() - timedelta(seconds=1)
    before = len(smtp_server.received)
    send_due(mail_app)
    assert outbox_item(mail_app, accepted["article_id"]).state == "sent"
    assert outbox_item(mail_app, lost["article_id"]).state == "sent"
    assert len(smtp_server.received) == before + 1  # only the one that never reached the server


def test_header_injection_is_refused(mail_app, agent, ticket_setup):
    account_id, address, ticket_id, customer = ticket_setup
    client = mail_app.test_client()
    auth = api(mail_app, agent)
    bad = client.post(f"/api/v1/tickets/{ticket_id}/reply", headers=auth,
                      json={"body_text": "hi", "cc": ["x@example.net\r\nBcc: spy@evil.test"]})
    assert bad.status_code == 400 and "line" in bad.get_json()["detail"]
    rt = mail_app.extensions["connector"]
    with rt.db.session() as session:
        account = session.get(Account, account_id)
        user = session.get(type(agent), agent.id)
        with pytest.raises(ComposeError):
            outbox.open_outgoing_ticket(session, account, user, "c@example.net", "Hi\r\nBcc: spy@evil.test", "x")
        with pytest.raises(ComposeError):
            outbox.open_outgoing_ticket(session, account, user, "c@example.net,\nBcc: spy@evil.test", "Hi", "x")
        session.rollback()
        assert session.scalar(select(OutboxItem).where(OutboxItem.account_id == account_id)) is None


def test_client_refuses_smtp_without_starttls(ca):
    from aiosmtpd.controller import Controller

    from connector.mail.smtp import SendFailure, SmtpSubmitter
    from tests.support.net import free_port

    class Sink:
        async def handle_DATA(self, server, session, envelope):
            return "250 OK"

    port = free_port()
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        submitter = SmtpSubmitter("127.0.0.1", port, str(ca.ca_path), timeout=5)
        with pytest.raises(SendFailure) as caught:
            submitter.connect("box@example.net", "a-token-that-must-not-travel-in-plaintext")
        assert "STARTTLS" in str(caught.value) and caught.value.permanent
        submitter.dispose()
    finally:
        controller.stop()


def test_running_worker_sends_a_queued_reply_promptly(mail_app, agent, dovecot, smtp_server, ticket_setup):
    import time

    from connector.worker import Worker
    from tests.support.mail import wait_until

    account_id, address, ticket_id, customer = ticket_setup
    worker = Worker(mail_app.extensions["connector"], name="outbox-test")
    worker.start_background()
    try:
        started = time.monotonic()
        article_id = mail_app.test_client().post(f"/api/v1/tickets/{ticket_id}/reply", headers=api(mail_app, agent),
                                                 json={"body_text": "On its way"}).get_json()["article_id"]
        wait_until(lambda: outbox_item(mail_app, article_id).state == "sent", timeout=10)
        assert time.monotonic() - started < 5
        assert len(dovecot.messages(customer)) == 1
    finally:
        worker.stop(wait=True, timeout=10)


@pytest.mark.parametrize("lease, timeout", [(300, 60.0), (30, 10.0)])
def test_a_send_cannot_outlast_its_lease(make_app, mail_config, org, ca, agent, dovecot, smtp_server, lease, timeout):
    """Another worker looks for an item's copy once its lease is over: one send (each SMTP step and the whole
    message) must end well before, or the lookup could run before the server has filed the copy."""
    app = make_app(**mail_config, worker={"sending_lease_seconds": lease})
    account_id, _ = connect(app, org, ca, agent)
    rt = app.extensions["connector"]
    with rt.db.session() as session:
        submitter = rt.servers.open_submitter(session, session.get(Account, account_id))
    try:
        assert submitter.timeout == timeout
    finally:
        submitter.dispose()
