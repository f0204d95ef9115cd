"""In the browser, with `connector serve` and its in-process worker against Dovecot and SMTP:
a customer's mail appears in the open ticket list without a reload, its HTML renders sanitised,
the agent replies with an attachment, the reply reaches the customer threaded, and the customer's
answer lands on the same ticket.
"""
from __future__ import annotations

import re
from email import message_from_bytes, policy

import pytest
from playwright.sync_api import expect

from tests.e2e.test_connect import consent_at_idp, register_app, sign_in
from tests.support.live import LiveServer
from tests.support.mail import make_mail

ADMIN = "admin@mailflow.test"
AGENT = "agent@mailflow.test"


@pytest.fixture
def server(tmp_path_factory, idp, ca, dovecot, smtp_server, server_database_url):
    server = LiveServer(tmp_path_factory.mktemp("mailflow"), idp_url=idp.url, ca_path=ca.ca_path, worker=True,
                        database_url=server_database_url(),
                        env={"CONNECTOR_MICROSOFT_IMAP_HOST": "127.0.0.1",
                             "CONNECTOR_MICROSOFT_IMAP_PORT": str(dovecot.imap_port),
                             "CONNECTOR_MICROSOFT_SMTP_HOST": "127.0.0.1",
                             "CONNECTOR_MICROSOFT_SMTP_PORT": str(smtp_server.port)})
    server.create_user(ADMIN, "admin")
    server.create_user(AGENT, "agent")
    with server:
        yield server


def test_mail_to_ticket_to_reply_and_back(page, server, make_org, idp, dovecot, smtp_server, tmp_path):
    org = make_org(redirect_uri=server.callback_url)
    sign_in(page, server, ADMIN)
    register_app(page, org)
    expect(page.get_by_role("status")).to_contain_text("Saved")
    mailbox = org.add_user("helpdesk", password="hd-pw")
    page.get_by_role("link", name="Mailboxes").click()
    consent_at_idp(page, server, idp, mailbox, "hd-pw")
    expect(page.locator("tr", has_text=mailbox).locator(".status")).to_have_text("connected")

    page.get_by_role("link", name="Tickets").click()
    expect(page.locator("#ticket-rows")).to_contain_text("No tickets")
    customer = f"customer-{org.domain}@example.net"
    html = ('<p>My <b>printer</b> is on fire.</p><script>document.title="pwned"</script>'
            '<img src="https://tracker.example/pixel.gif" alt="tracking pixel">')
    dovecot.deliver(mailbox, make_mail(to=mailbox, sender=customer, subject="Printer on fire", html=html,
                                       body="My printer is on fire.", message_id=f"<fire@{org.domain}>"))
    row = page.locator("#ticket-rows tr", has_text="Printer on fire")
    expect(row).to_be_visible(timeout=15_000)  # no reload: the list refreshes itself (IDLE, then its poll)
    row.get_by_role("link", name="Printer on fire").click()

    frame = page.frame_locator("iframe.mail-html")
    expect(frame.locator("b", has_text="printer")).to_be_visible()
    assert page.title() != "pwned"
    expect(frame.locator("script")).to_have_count(0)
    expect(frame.locator('img[src*="tracker.example"]')).to_have_count(0)
    expect(page.get_by_text("1 remote image blocked.")).to_be_visible()
    page.get_by_role("button", name="Show remote images").click()
    expect(frame.locator('img[src*="tracker.example"]')).to_have_count(1)
    page.screenshot(path=str(tmp_path / "ticket.png"), full_page=True)

    reply = page.get_by_label("Reply")
    expect(reply).to_have_value(re.compile(r"wrote:\n> My printer is on fire\."))
    reply.fill("A technician is on the way.\n\n" + reply.input_value())
    page.get_by_label("Cc").fill("facilities@example.net")
    attachment = tmp_path / "checklist.txt"
    attachment.write_text("1. Unplug it.\n")
    page.get_by_label("Attachments").set_input_files(str(attachment))
    before = len(smtp_server.received)
    page.get_by_role("button", name="Send reply").click()
    expect(page.get_by_role("status")).to_contain_text("Reply queued")
    for _ in range(50):
        if page.locator('[data-delivery="sent"]').count():
            break
        page.wait_for_timeout(200)
        page.reload()
    expect(page.locator('[data-delivery="sent"]')).to_have_count(1)
    expect(page.locator(".delivery-detail")).to_contain_text("the server said")

    [received] = smtp_server.received[before:]
    mail = message_from_bytes(received.raw, policy=policy.default)
    number = re.search(r"\[#(\d+)\]", page.locator("h1").inner_text()).group(1)
    assert mail["From"].addresses[0].addr_spec == mailbox
    assert mail["Subject"] == f"Re: Printer on fire [#{number}]"
    assert mail["In-Reply-To"] == f"<fire@{org.domain}>" and f"<fire@{org.domain}>" in mail["References"]
    assert mail["Cc"] == "facilities@example.net"
    [part] = list(mail.iter_attachments())
    assert part.get_filename() == "checklist.txt" and part.get_content() == "1. Unplug it.\n"
    assert [m["message_id"] for m in dovecot.messages(customer)] == [mail["Message-ID"]]

    dovecot.deliver(mailbox, make_mail(to=mailbox, sender=customer, subject=str(mail["Subject"]),
                                       in_reply_to=mail["Message-ID"], references=mail["Message-ID"],
                                       body="Thank you, it is out."))
    for _ in range(50):
        if page.locator("article.article").count() == 3:
            break
        page.wait_for_timeout(200)
        page.reload()
    expect(page.locator("article.article")).to_have_count(3)
    expect(page.locator("article.article").last).to_contain_text("Thank you, it is out.")
    page.screenshot(path=str(tmp_path / "thread.png"), full_page=True)
    assert org.secret not in server.logs()
