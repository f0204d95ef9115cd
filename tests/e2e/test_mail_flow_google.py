"""In Chromium, with `connector serve` and its in-process worker: one Microsoft 365 mailbox (Dovecot + SMTP
checking tokens at the test IdP) and one Google Workspace mailbox (the Gmail-like Dovecot + SMTP checking
tokens at the Google stand-in's tokeninfo) connected side by side; a customer writes to each, the mail
appears in the live ticket list, the agent replies from each ticket, each reply leaves through its own
provider's SMTP server as that mailbox, and each customer's answer lands on the same ticket.
"""
from __future__ import annotations

import re
from email import message_from_bytes, policy

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.test_connect import consent_at_idp, register_app, sign_in, sign_out
from tests.e2e.test_connect_google import save_google_app, sign_in_at_google
from tests.support import gmail
from tests.support.gmail import gmail_smtp  # noqa: F401
from tests.support.google import gmail_dovecot, make_google_org  # noqa: F401
from tests.support.live import LiveServer
from tests.support.mail import make_mail

ADMIN = "admin@sidebyside.test"
AGENT = "agent@sidebyside.test"


@pytest.fixture
def server(tmp_path_factory, idp, google, ca, dovecot, smtp_server, gmail_dovecot, gmail_smtp,  # noqa: F811
           server_database_url):
    server = LiveServer(tmp_path_factory.mktemp("sidebyside"), idp_url=idp.url, ca_path=ca.ca_path, worker=True,
                        database_url=server_database_url(),
                        env={"CONNECTOR_MICROSOFT_IMAP_HOST": "127.0.0.1",
                             "CONNECTOR_MICROSOFT_IMAP_PORT": str(dovecot.imap_port),
                             "CONNECTOR_MICROSOFT_SMTP_HOST": "127.0.0.1",
                             "CONNECTOR_MICROSOFT_SMTP_PORT": str(smtp_server.port),
                             "CONNECTOR_GOOGLE_AUTHORITY": google.url,
                             "CONNECTOR_GOOGLE_IMAP_HOST": "127.0.0.1",
                             "CONNECTOR_GOOGLE_IMAP_PORT": str(gmail_dovecot.imap_port),
                             "CONNECTOR_GOOGLE_SMTP_HOST": "127.0.0.1",
                             "CONNECTOR_GOOGLE_SMTP_PORT": str(gmail_smtp.port)})
    server.create_user(ADMIN, "admin")
    server.create_user(AGENT, "agent")
    with server:
        yield server


def open_ticket(page: Page, subject: str) -> None:
    page.get_by_role("link", name="Tickets", exact=True).click()
    row = page.locator("#ticket-rows tr", has_text=subject)
    expect(row).to_be_visible(timeout=10_000)  # no reload: the list refreshes itself
    row.get_by_role("link", name=subject).click()


def send_reply(page: Page, text: str) -> None:
    page.get_by_label("Reply").fill(text)
    page.get_by_role("button", name="Send reply").click()
    expect(page.get_by_role("status")).to_contain_text("Reply queued")
    for _ in range(75):
        if page.locator('[data-delivery="sent"]').count():
            break
        page.wait_for_timeout(200)
        page.reload()
    expect(page.locator('[data-delivery="sent"]')).to_have_count(1)


def wait_for_articles(page: Page, count: int) -> None:
    for _ in range(75):
        if page.locator("article.article").count() == count:
            break
        page.wait_for_timeout(200)
        page.reload()
    expect(page.locator("article.article")).to_have_count(count)


def test_microsoft_and_google_mailboxes_receive_and_reply_side_by_side(page, server, make_org, make_google_org,
                                                                        idp, google, dovecot, smtp_server,
                                                                        gmail_dovecot, gmail_smtp, tmp_path):
    ms_org = make_org(redirect_uri=server.callback_url)
    g_org = make_google_org(redirect_uri=server.url("/auth/google/callback"))
    sign_in(page, server, ADMIN)
    register_app(page, ms_org)
    expect(page.get_by_role("status")).to_contain_text("Saved")
    save_google_app(page, g_org)
    expect(page.get_by_role("status")).to_contain_text("Saved")
    sign_out(page)

    ms_box = ms_org.add_user("support", password="ms-pw")
    g_box = g_org.user("support", password="g-pw").email
    sign_in(page, server, AGENT)
    page.get_by_role("link", name="Mailboxes").click()
    consent_at_idp(page, server, idp, ms_box, "ms-pw")
    expect(page).to_have_url(server.url("/accounts"))
    page.get_by_role("button", name="Connect Google").click()
    sign_in_at_google(page, google, g_box, "g-pw")
    expect(page).to_have_url(server.url("/accounts"))
    for address in (ms_box, g_box):
        expect(page.locator("tr", has_text=address).locator(".status")).to_have_text("connected")

    ms_customer, g_customer = f"ms-{ms_org.domain}@example.net", f"g-{g_org.domain}@example.net"
    dovecot.deliver(ms_box, make_mail(to=ms_box, sender=ms_customer, subject="Invoice via Exchange",
                                      message_id=f"<inv@{ms_org.domain}>", body="Where is my invoice?"))
    gmail_dovecot.deliver(g_box, make_mail(to=g_box, sender=g_customer, subject="Refund via Gmail",
                                           message_id=f"<ref@{g_org.domain}>", body="Where is my refund?"))

    sent = {}
    for subject, customer, outbox_server, box in (
            ("Invoice via Exchange", ms_customer, smtp_server, ms_box),
            ("Refund via Gmail", g_customer, gmail_smtp, g_box)):
        open_ticket(page, subject)
        before = len(outbox_server.received)
        send_reply(page, f"Answer to {subject}.")
        [received] = outbox_server.received[before:]
        mail = message_from_bytes(received.raw, policy=policy.default)
        assert received.auth_login == box and mail["From"].addresses[0].addr_spec == box
        assert received.rcpt_tos == [customer] and mail["Subject"].startswith(f"Re: {subject} [#")
        sent[box] = (mail, customer, page.url)
    assert gmail_smtp.received[-1].auth_login == g_box and smtp_server.received[-1].auth_login == ms_box
    g_mail = sent[g_box][0]
    assert g_mail["Message-ID"] in [m["message_id"] for m in gmail.messages(gmail_dovecot, g_box, gmail.SENT_MAIL)]

    # each customer answers the reply; each answer lands on its ticket
    for box, deliver in ((ms_box, dovecot.deliver), (g_box, gmail_dovecot.deliver)):
        mail, customer, ticket_url = sent[box]
        deliver(box, make_mail(to=box, sender=customer, subject=str(mail["Subject"]), in_reply_to=mail["Message-ID"],
                               references=mail["Message-ID"], body=f"Thanks from {customer}."))
        page.goto(ticket_url)
        wait_for_articles(page, 3)
        expect(page.locator("article.article").last).to_contain_text(f"Thanks from {customer}.")
    page.screenshot(path=str(tmp_path / "side-by-side.png"), full_page=True)
    logs = server.logs()
    assert ms_org.secret not in logs and g_org.secret not in logs
