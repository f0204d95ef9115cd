"""The layout holds for any mail: no page scrolls sideways at 1280 px (a laptop) or 390 px (a phone).

Mail puts anything in a subject, an address, a file name or a line. A mailbox and a customer with
200-character addresses, tickets with 300-character unbroken subjects, a plain-text mail with a
10,000-character line and a 50-level quote, an HTML mail with the same (and a table wider than any
screen), a forwarded mail and an attachment with such names, and admin rows with such values: then in
Chromium, at both widths, the ticket list, both tickets, Mailboxes (both of its pages, and a search), the API tokens page and every admin
page must have `scrollWidth <= innerWidth`, and so must every mail frame inside the ticket page. On the
phone, the list shows each ticket's subject as a link inside the window and the reply form fits.

One `connector serve` and one page per width; eleven page loads each.
"""
from __future__ import annotations

from email.message import EmailMessage

import pytest
from playwright.sync_api import Page

from connector import api_tokens
from connector.ingest import FetchedMail, ingest
from connector.mail.parse import parse_message
from connector.models import Account, ImportFailure, User
from tests.e2e.test_connect import sign_in
from tests.support.live import LiveServer

WIDTHS = (1280, 390)
SUBJECT = "S" + "ubjectwithoutanyspace" * 14 + "X" * 5  # 300 characters, no break opportunity
LONG_LINE = "L" * 10_000
ADDRESS_LOCAL = "customer." + "a" * 55  # 64, the most RFC 5321 allows
ADDRESS = ADDRESS_LOCAL + "@" + ".".join(["d" * 60, "e" * 60, "example"]) + ".test"  # 200 characters
MAILBOX = "desk" + ADDRESS[4:]  # the mailbox's own address, as long


def _quote(levels: int) -> str:
    return "\n".join(">" * level + " level " + str(level) for level in range(1, levels + 1))


def _html_body() -> str:
    nested = "".join("<blockquote>quoted " + str(i) for i in range(50)) + "deepest" + "</blockquote>" * 50
    return (f"<p>{LONG_LINE}</p><pre>{LONG_LINE}</pre>{nested}"
            f'<table width="3000"><tr><td>{LONG_LINE}</td><td>wide</td></tr></table>'
            f'<p><a href="https://example.com/{LONG_LINE}">https://example.com/{LONG_LINE}</a></p>')


def hostile_mails(to: str) -> list[bytes]:
    plain = EmailMessage()
    plain["From"], plain["To"], plain["Cc"] = f"{'N' * 200} <{ADDRESS}>", to, ADDRESS
    plain["Subject"], plain["Message-ID"] = SUBJECT, "<layout-plain@example.test>"
    plain.set_content(f"Hello,\n{LONG_LINE}\n{_quote(50)}\nhttps://example.com/{LONG_LINE}\n")
    plain.add_attachment(b"data", maintype="application", subtype="octet-stream", filename="F" * 250 + ".bin")
    inner = EmailMessage()
    inner["From"], inner["To"], inner["Subject"] = ADDRESS, ADDRESS, SUBJECT
    inner["Date"] = "Tue, 1 Dec 2026 10:00:00 +0000"
    inner.set_content(LONG_LINE + "\n" + _quote(50))
    plain.add_attachment(inner)

    html = EmailMessage()
    html["From"], html["To"] = ADDRESS, to
    html["Subject"], html["Message-ID"] = SUBJECT[::-1], "<layout-html@example.test>"
    html.set_content(f"{LONG_LINE}\n{_quote(50)}")
    html.add_alternative(_html_body(), subtype="html")
    return [plain.as_bytes(), html.as_bytes()]


def _seed(app, owner) -> list[int]:
    """The hostile data, written the way the sync and the pages write it; the ticket ids."""
    rt = app.extensions["connector"]
    with rt.db.session() as session:
        account = Account(address=MAILBOX, connected_by_id=owner.id, status="error", token_owner="T" * 200,
                          last_error="IMAP said: " + LONG_LINE)
        session.add(account)
        session.flush()
        ids = [r.ticket_id for r in ingest(session, account, [FetchedMail(raw, parse_message(raw))
                                                             for raw in hostile_mails(MAILBOX)])]
        session.add(ImportFailure(account_id=account.id, uidvalidity=1, uid=7, attempts=3, quarantined=True,
                                  last_error="parse failed: " + LONG_LINE))
        # enough mailboxes for a second page of Mailboxes (50 a page): its pager and search must fit too;
        # "box..." sorts before MAILBOX, which is therefore on page 2
        session.add_all(Account(address=f"box{i:02d}-{ADDRESS}", connected_by_id=owner.id) for i in range(55))
        session.add(User(email=ADDRESS, password_hash="!", role="agent"))
        api_tokens.create(session, session.get(User, owner.id), "N" * api_tokens.MAX_NAME)
    assert None not in ids
    return ids


# On a phone Chromium widens the layout viewport (innerWidth) to a page too wide for it and zooms out:
# innerWidth must stay the window's width, and scrollWidth within it.
_OVERFLOW = """(viewport) => {
  const wide = [];
  const width = document.documentElement.scrollWidth, inner = window.innerWidth;
  if (inner !== viewport) wide.push(`page: zoomed out, innerWidth ${inner} for a ${viewport} px window`);
  if (width > inner) wide.push(`page: scrollWidth ${width} > innerWidth ${inner}`);
  document.querySelectorAll("iframe.mail-html").forEach((frame, i) => {
    const doc = frame.contentDocument;
    if (doc && doc.documentElement && doc.documentElement.scrollWidth > frame.clientWidth)
      wide.push(`mail frame ${i}: scrollWidth ${doc.documentElement.scrollWidth} > ${frame.clientWidth}`);
  });
  return wide;
}"""


def _frames_loaded(page: Page) -> None:
    for frame in page.locator("iframe.mail-html").all():
        frame.scroll_into_view_if_needed()
        page.wait_for_function("f => f.contentDocument && f.contentDocument.readyState === 'complete' "
                               "&& f.contentDocument.body && f.contentDocument.body.childNodes.length",
                               arg=frame.element_handle())
    page.evaluate("window.scrollTo(0, 0)")


@pytest.mark.backends("sqlite")  # the layout does not depend on the database
def test_no_page_scrolls_sideways_at_laptop_and_phone_widths(app, admin, idp, ca, browser, database_url, tmp_path):
    tickets = _seed(app, admin)
    paths = ["/tickets", *(f"/tickets/{t}" for t in tickets), "/accounts", "/accounts?page=2",
             f"/accounts?q={ADDRESS[:150]}", "/account/tokens", "/admin/users",
             "/admin/quarantine", "/admin/microsoft", "/admin/google", "/tickets/new"]
    problems: list[str] = []
    shown_here: dict[str, tuple[str, int]] = {}  # path -> (its text, its mail frames): the values are there
    with LiveServer(tmp_path / "serve", idp_url=idp.url, ca_path=ca.ca_path, database_url=database_url) as server:
        for width in WIDTHS:
            context = browser.new_context(viewport={"width": width, "height": 800}, is_mobile=width < 500,
                                          has_touch=width < 500)
            context.set_default_timeout(20_000)
            page = context.new_page()
            sign_in(page, server, admin.email)
            for path in paths:
                page.goto(server.url(path))
                _frames_loaded(page)
                problems += [f"{path} at {width} px: {p}" for p in page.evaluate(_OVERFLOW, width)]
                shown_here[path] = page.locator("body").inner_text(), page.locator("iframe.mail-html").count()
                if path == "/tickets" and width < 500:
                    for link in page.locator("table.tickets td.subject a").all():
                        box = link.bounding_box()
                        if not box or box["x"] < 0 or box["x"] + box["width"] > width:
                            problems.append(f"/tickets at {width} px: a subject link is outside the window: {box}")
                if path == f"/tickets/{tickets[0]}" and width < 500:
                    reply = page.locator("#reply textarea")
                    box = reply.bounding_box() if reply.count() == 1 else None
                    if not box or box["x"] < 0 or box["x"] + box["width"] > width:
                        problems.append(f"{path} at {width} px: the reply box is outside the window: {box}")
            context.close()
    assert not problems, "\n".join(problems)
    assert SUBJECT in shown_here["/tickets"][0] and SUBJECT[::-1] in shown_here["/tickets"][0]
    plain, html = (shown_here[f"/tickets/{t}"] for t in tickets)
    assert LONG_LINE in plain[0] and plain[1] == 0
    assert "level 50" in plain[0]
    assert "F" * 60 in plain[0]  # the file name (shortened for display, whole in the download)
    assert html[1] == 1
    assert MAILBOX in shown_here["/accounts?page=2"][0] and ADDRESS in shown_here["/admin/users"][0]
    assert "Page 1 of 2" in shown_here["/accounts"][0] and "Page 2 of 2" in shown_here["/accounts?page=2"][0]
    assert "55 mailboxes with" in shown_here[f"/accounts?q={ADDRESS[:150]}"][0]
    assert "parse failed: " + LONG_LINE[:100] in shown_here["/admin/quarantine"][0]
