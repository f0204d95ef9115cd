"""Header injection, tried where people and strangers put text into our mail: the reply form,
/tickets/new, the API reply, and a customer's subject that becomes our "Re:". Judged on the mail as
the real SMTP server received it: no header but ours, no recipient but the intended ones.

"Line break" is every character the email package folds on (str.splitlines): CR, LF, VT, FF, FS, GS,
RS, NEL, U+2028, U+2029, plus NUL.
"""
from __future__ import annotations

import base64
import io
import re
from email import message_from_bytes, policy

import pytest
from sqlalchemy import func, select

from connector.models import OutboxItem, Ticket
from tests.outbox.test_send import api, send_due, ticket_setup  # noqa: F401 - ticket_setup is a fixture
from tests.support.app import csrf_token, login
from tests.support.mail import make_mail, run_pass

EVIL = "spy@attacker.test"
BREAKS = ["\r\n", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\x00"]
ALLOWED_TOP = {"from", "to", "cc", "subject", "date", "message-id", "in-reply-to", "references", "mime-version",
               "content-type", "content-transfer-encoding"}
ALLOWED_PART = {"content-type", "content-transfer-encoding", "content-disposition", "mime-version"}


def assert_clean(received, recipients: set[str]) -> None:
    """Only our headers, in the message and in every part, and only the intended envelope recipients."""
    assert set(received.rcpt_tos) == recipients, received.rcpt_tos
    message = message_from_bytes(received.raw, policy=policy.compat32)
    top = {name.lower() for name in message.keys()}
    assert top <= ALLOWED_TOP, top - ALLOWED_TOP
    for part in message.walk():
        if part is not message:
            names = {name.lower() for name in part.keys()}
            assert names <= ALLOWED_PART, names - ALLOWED_PART
    head = received.raw.split(b"\r\n\r\n", 1)[0]
    assert not re.search(rb"(?im)^(bcc|x-injected)\s*:", head)
    for name, value in message.items():
        if name.lower() != "subject":  # the customer's own subject may say anything, as text
            assert EVIL not in value, (name, value)


def queued(app, ticket_id=None) -> int:
    with app.extensions["connector"].db.session() as session:
        return session.scalar(select(func.count()).select_from(OutboxItem))


def sent_since(app, smtp_server, before: int) -> list:
    send_due(app)
    return smtp_server.received[before:]


def web_client(app, agent):
    client = app.test_client()
    login(client, agent.email)
    return client


def test_the_reply_form_refuses_a_line_break_in_cc_and_keeps_one_in_the_text(mail_app, agent, smtp_server,
                                                                            ticket_setup):
    account_id, address, ticket_id, customer = ticket_setup
    client = web_client(mail_app, agent)
    before_items = queued(mail_app)
    for brk in BREAKS:
        page = client.get(f"/tickets/{ticket_id}").get_data(as_text=True)
        response = client.post(f"/tickets/{ticket_id}/reply", follow_redirects=True, data={
            "csrf_token": csrf_token(page), "body": "Hello", "cc": f"boss@example.net{brk}Bcc: {EVIL}"})
        assert "The reply was not sent" in response.get_data(as_text=True), repr(brk)
    assert queued(mail_app) == before_items

    # the text of a reply may hold anything, "Bcc:" lines and a file name with breaks included: it stays text
    page = client.get(f"/tickets/{ticket_id}").get_data(as_text=True)
    before = len(smtp_server.received)
    response = client.post(f"/tickets/{ticket_id}/reply", content_type="multipart/form-data", data={
        "csrf_token": csrf_token(page), "cc": "boss@example.net",
        "body": f"Dear customer,\r\n\r\nBcc: {EVIL}\r\nX-Injected: 1\r\n\r\n.\r\nMAIL FROM:<{EVIL}>\r\n",
        "files": (io.BytesIO(b"data"), f"notes\u2028Bcc: {EVIL}\u202e.txt")})
    assert response.status_code == 302
    [received] = sent_since(mail_app, smtp_server, before)
    assert_clean(received, {customer, "boss@example.net"})
    mail = message_from_bytes(received.raw, policy=policy.default)
    assert f"Bcc: {EVIL}" in mail.get_body(("plain",)).get_content()
    [attachment] = list(mail.iter_attachments())
    assert "\u202e" not in attachment.get_filename() and "\u2028" not in attachment.get_filename()


def test_a_new_mail_refuses_line_breaks_in_to_cc_and_subject(mail_app, agent, smtp_server, ticket_setup):
    account_id, address, ticket_id, customer = ticket_setup
    client = web_client(mail_app, agent)
    with mail_app.extensions["connector"].db.session() as session:
        tickets_before = session.scalar(select(func.count()).select_from(Ticket))
    good = {"account": str(account_id), "to": "new@example.net", "cc": "", "subject": "Hello", "body": "Text"}
    for brk in BREAKS:
        for field, value in (("to", f"new@example.net{brk}Bcc: {EVIL}"), ("cc", f"a@example.net{brk}Bcc: {EVIL}"),
                             ("subject", f"Hello{brk}Bcc: {EVIL}")):
            page = client.get("/tickets/new").get_data(as_text=True)
            response = client.post("/tickets/new", data=good | {field: value, "csrf_token": csrf_token(page)})
            assert response.status_code == 400, (field, repr(brk), response.status_code)
            text = response.get_data(as_text=True)
            assert "single line" in text or "not an email address" in text or "Invalid" in text, (field, repr(brk))
    with mail_app.extensions["connector"].db.session() as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == tickets_before
    before = len(smtp_server.received)
    page = client.get("/tickets/new").get_data(as_text=True)
    assert client.post("/tickets/new", data=good | {"csrf_token": csrf_token(page)}).status_code == 302
    [received] = sent_since(mail_app, smtp_server, before)
    assert_clean(received, {"new@example.net"})


def test_the_api_reply_refuses_line_breaks_in_cc(mail_app, agent, smtp_server, ticket_setup):
    account_id, address, ticket_id, customer = ticket_setup
    client = mail_app.test_client()
    auth = api(mail_app, agent)
    before_items = queued(mail_app)
    for brk in BREAKS:
        for cc in ([f"boss@example.net{brk}Bcc: {EVIL}"], [f"{EVIL}{brk}"], ["boss@example.net", f"{brk}{EVIL}"]):
            response = client.post(f"/api/v1/tickets/{ticket_id}/reply", headers=auth,
                                   json={"body_text": "Hi", "cc": cc})
            assert response.status_code == 400, (repr(brk), cc)
            assert response.get_json()["error"] == "bad_request" and response.get_json()["detail"]
    assert queued(mail_app) == before_items
    before = len(smtp_server.received)
    response = client.post(f"/api/v1/tickets/{ticket_id}/reply", headers=auth,
                           json={"body_text": f"Fine.\r\nBcc: {EVIL}\r\n", "cc": ["boss@example.net"]})
    assert response.status_code == 202
    [received] = sent_since(mail_app, smtp_server, before)
    assert_clean(received, {customer, "boss@example.net"})


def encoded_word(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


@pytest.mark.parametrize("subject_header", [
    "=?utf-8?q?Order_missing=0D=0ABcc:_spy@attacker.test?=",
    "=?utf-8?q?Order_missing=0ABcc:_spy@attacker.test=0D=0AX-Injected:_1?=",
    "=?utf-8?q?Order_missing=0BBcc:_spy@attacker.test?=",
    encoded_word("Order missing\x85Bcc: spy@attacker.test"),
    encoded_word("Order missing\u2028Bcc: spy@attacker.test\u2029X-Injected: 1"),
    encoded_word("Order missing\x00\x1cBcc: spy@attacker.test"),
], ids=["crlf", "lf-crlf", "vt", "nel", "u2028", "nul-fs"])
def test_a_customer_subject_with_encoded_line_breaks_becomes_a_one_line_re(mail_app, agent, dovecot, smtp_server,
                                                                           ticket_setup, subject_header):
    """The customer chose the subject; our reply must still go out, with it on one line."""
    account_id, address, _, _ = ticket_setup
    customer = f"subject-{abs(hash(subject_header))}@example.net"
    raw = make_mail(to=address, sender=customer, subject="placeholder", body="Where is my order?")
    raw = raw.replace(b"Subject: placeholder", b"Subject: " + subject_header.encode())
    dovecot.deliver(address, raw)
    run_pass(mail_app, account_id)
    with mail_app.extensions["connector"].db.session() as session:
        ticket = session.scalar(select(Ticket).where(Ticket.customer_address == customer))
        ticket_id, number = ticket.id, ticket.number
    before = len(smtp_server.received)
    # by the API and by the reply form, both
    assert mail_app.test_client().post(f"/api/v1/tickets/{ticket_id}/reply", headers=api(mail_app, agent),
                                       json={"body_text": "It ships today."}).status_code == 202
    client = web_client(mail_app, agent)
    page = client.get(f"/tickets/{ticket_id}").get_data(as_text=True)
    assert client.post(f"/tickets/{ticket_id}/reply", data={"csrf_token": csrf_token(page), "body": "Again.",
                                                            "cc": ""}).status_code == 302
    received = sent_since(mail_app, smtp_server, before)
    assert len(received) == 2
    for mail in received:
        assert_clean(mail, {customer})
        subject = message_from_bytes(mail.raw, policy=policy.default)["Subject"]
        assert subject.startswith("Re: Order missing") and subject.endswith(f"[#{number}]"), subject
        assert not any(brk in subject for brk in BREAKS)
