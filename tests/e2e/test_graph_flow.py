"""In the browser, with `connector serve` and its in-process worker against the Graph stand-in (no IMAP or
SMTP anywhere): an admin connects a mailbox choosing "Microsoft Graph", a customer's mail appears in the
ticket list without a reload, the agent replies, the reply leaves through sendMail as MIME (threading
headers and the subject tag kept), and the customer's answer lands on the same ticket."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.test_connect import register_app, sign_in
from tests.idp.model import DEFAULT_PERMISSIONS
from tests.support.graph import GRAPH_PERMISSIONS, graph  # noqa: F401 - fixture
from tests.support.live import LiveServer
from tests.support.mail import make_mail

ADMIN = "admin@graphflow.test"


@pytest.fixture
def server(tmp_path_factory, idp, ca, graph, server_database_url):  # noqa: F811
    server = LiveServer(tmp_path_factory.mktemp("graphflow"), idp_url=idp.url, ca_path=ca.ca_path, worker=True,
                        database_url=server_database_url(),
                        env={"CONNECTOR_MICROSOFT_GRAPH_HOST": graph.url,
                             # nothing answers IMAP or SMTP: everything must go through Graph
                             "CONNECTOR_MICROSOFT_IMAP_HOST": "127.0.0.1", "CONNECTOR_MICROSOFT_IMAP_PORT": "9",
                             "CONNECTOR_MICROSOFT_SMTP_HOST": "127.0.0.1", "CONNECTOR_MICROSOFT_SMTP_PORT": "9"})
    server.create_user(ADMIN, "admin")
    with server:
        yield server


def _reload_until(page, condition, tries: int = 60) -> None:
    for _ in range(tries):
        if condition():
            return
        page.wait_for_timeout(250)
        page.reload()


def test_connect_with_graph_receive_reply_and_the_answer_threads(page, server, make_org, idp, graph,  # noqa: F811
                                                                 tmp_path):
    org = make_org(redirect_uri=server.callback_url, permissions=list(DEFAULT_PERMISSIONS) + GRAPH_PERMISSIONS)
    sign_in(page, server, ADMIN)
    register_app(page, org)
    expect(page.get_by_role("status")).to_contain_text("Saved")
    expect(page.get_by_text("Mail.ReadWrite.Shared")).to_be_visible()  # the permissions to add for Graph
    mailbox = org.add_user("desk", password="desk-pw")
    page.get_by_role("link", name="Mailboxes").click()
    page.get_by_label("Transport", exact=True).select_option("graph")
    page.get_by_role("button", name="Connect Microsoft 365").click()
    expect(page).to_have_url(re.compile("^" + re.escape(idp.url) + "/"))
    page.get_by_label("Email, phone, or Skype").fill(mailbox)
    page.get_by_label("Password").fill("desk-pw")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("Read and write access to your mail")).to_be_visible()  # Graph's, not IMAP's
    page.get_by_role("button", name="Accept").click()
    row = page.locator("tr", has_text=mailbox)
    expect(row.locator(".status")).to_have_text("connected")
    expect(row.locator(".transport")).to_have_text("Microsoft Graph")

    customer = f"customer-{org.domain}@example.net"
    graph.deliver(mailbox, make_mail(to=mailbox, sender=customer, subject="Scanner jammed",
                                     body="The scanner is jammed.", message_id=f"<jam@{org.domain}>"))
    page.get_by_role("link", name="Tickets").click()
    ticket_row = page.locator("#ticket-rows tr", has_text="Scanner jammed")
    expect(ticket_row).to_be_visible(timeout=15000)  # delta polling, and the list refreshes itself
    ticket_row.get_by_role("link", name="Scanner jammed").click()

    reply = page.get_by_label("Reply")
    reply.fill("We are sending someone.\n\n" + reply.input_value())
    page.get_by_role("button", name="Send reply").click()
    expect(page.get_by_role("status")).to_contain_text("Reply queued")
    _reload_until(page, lambda: page.locator('[data-delivery="sent"]').count() > 0)
    expect(page.locator('[data-delivery="sent"]')).to_have_count(1)

    [sent] = graph.sent_mail(mailbox)
    number = re.search(r"\[#(\d+)\]", page.locator("h1").inner_text()).group(1)
    headers = sent.raw.split(b"\r\n\r\n", 1)[0].decode()
    assert f"[#{number}]" in headers and f"In-Reply-To: <jam@{org.domain}>" in headers
    assert customer in sent.recipients
    assert [m.internet_message_id for m in graph.messages(mailbox, "sentitems")] == [sent.message_id]

    graph.deliver(mailbox, make_mail(to=mailbox, sender=customer, subject=f"Re: Scanner jammed [#{number}]",
                                     in_reply_to=sent.message_id, references=sent.message_id,
                                     body="Thanks, it works again."))
    _reload_until(page, lambda: page.locator("article.article").count() == 3)
    expect(page.locator("article.article")).to_have_count(3)
    expect(page.locator("article.article").last).to_contain_text("Thanks, it works again.")
    page.screenshot(path=str(tmp_path / "graph-thread.png"), full_page=True)
    assert org.secret not in server.logs()
