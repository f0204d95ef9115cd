"""Markup from strangers' mail is text, in Chromium, against `connector serve` with its worker.

A real mail (delivered through Dovecot, imported by the worker) carries HTML and script in its subject,
its sender's name and an attachment's file name. The ticket list, open before the mail arrives, must
show it through its live update (app.js) and after a reload (the server's rendering), and the ticket
page must show it too: as the literal characters, with no element made from it and no script run.
The page's CSP would stop an injected inline script anyway, so these tests look for the elements
and the text themselves, which is what fails when escaping is lost.

The mail's HTML body is checked in its frame: shown, sized, its inline (cid:) image loaded, and when
its URL is opened on its own it is sandboxed with an opaque origin.
"""
from __future__ import annotations

import itertools
import re
import struct
import zlib
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from datetime import datetime, timezone

import pytest
from playwright.sync_api import Page, expect

from connector.mail.filenames import display_filename
from tests.conftest import DATABASE_BACKENDS
from tests.e2e.test_connect import consent_at_idp, register_app, sign_in
from tests.support.app import Org
from tests.support.live import LiveServer

ADMIN = "admin@markup.test"
SUBJECT = ("<img src=x onerror=\"window.pwned='subject'\"><script>window.pwned='script'</script> "
           "\"double\" 'single' &amp; </td></tr><tr><td>broken row")
SENDER_NAME = "<img src=x onerror=window.pwned='sender'> \"Mallory\" 'O'Neil' <b>bold</b>"
# U+202E RIGHT-TO-LEFT OVERRIDE would show "...exe.jpg" for a file that is an .exe
FILE_NAME = "<img src=x onerror=window.pwned='file'>\"q'\u202egpj.exe"
_n = itertools.count(1)


def png(width: int = 40, height: int = 30) -> bytes:
    """A real PNG (solid red), so the browser decodes it and reports its size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def hostile_mail(to: str) -> bytes:
    n = next(_n)
    msg = EmailMessage()
    msg["From"] = Address(display_name=SENDER_NAME, addr_spec=f"mallory{n}@example.net")
    msg["To"] = to
    msg["Subject"] = SUBJECT
    msg["Date"] = format_datetime(datetime.now(timezone.utc))
    msg["Message-ID"] = make_msgid(domain="example.net")
    msg.set_content("Please open the attachment.")
    cid = make_msgid(domain="example.net")
    html = (f'<p>Our logo: <img src="cid:{cid[1:-1]}" alt="logo"></p>'
            + "".join(f"<p>Line {i} of a long mail.</p>" for i in range(60)))
    msg.add_alternative(html, subtype="html")
    msg.get_payload()[1].add_related(png(), "image", "png", cid=cid)
    msg.add_attachment(b"MZ\x90\x00 not really a program", maintype="application", subtype="octet-stream",
                       filename=FILE_NAME)
    return msg.as_bytes()


@pytest.fixture(scope="module", params=DATABASE_BACKENDS)
def desk(request, tmp_path_factory, idp, ca, dovecot, smtp_server, browser, make_module_database_url):
    """`connector serve` with its worker, the app registered and one mailbox connected (in Chromium)."""
    server = LiveServer(tmp_path_factory.mktemp("markup"), idp_url=idp.url, ca_path=ca.ca_path, worker=True,
                        database_url=make_module_database_url(request.param),
                        env={"CONNECTOR_MICROSOFT_IMAP_HOST": "127.0.0.1",
                             "CONNECTOR_MICROSOFT_IMAP_PORT": str(dovecot.imap_port),
                             "CONNECTOR_MICROSOFT_SMTP_HOST": "127.0.0.1",
                             "CONNECTOR_MICROSOFT_SMTP_PORT": str(smtp_server.port)})
    server.create_user(ADMIN, "admin")
    domain = f"markup-{request.param}.test"  # a tenant and a mailbox of its own for each database
    tenant = idp.add_tenant(domain)
    app = idp.add_app(tenant, secret="markup-secret-value", redirect_uris=[server.callback_url])
    org = Org(idp, tenant, app, "markup-secret-value", domain)
    with server:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(10_000)
        page = context.new_page()
        sign_in(page, server, ADMIN)
        register_app(page, org)
        expect(page.get_by_role("status")).to_contain_text("Saved")
        mailbox = org.add_user("desk", password="desk-pw")
        page.get_by_role("link", name="Mailboxes").click()
        consent_at_idp(page, server, idp, mailbox, "desk-pw")
        expect(page.locator("tr", has_text=mailbox).locator(".status")).to_have_text("connected")
        context.close()
        yield server, mailbox


class Watch:
    """What the page did that it should not: dialogs, CSP reports (markup parsed as HTML), a set marker."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.csp: list[str] = []
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.on("console", lambda m: self.csp.append(m.text) if "Content Security Policy" in m.text else None)

    def assert_quiet(self) -> None:
        assert self.page.evaluate("() => window.pwned") is None, "script from the mail ran"
        assert self.dialogs == [] and self.csp == [], (self.dialogs, self.csp)


def assert_no_markup_elements(scope) -> None:
    for selector in ("img[src='x']", "img[onerror]", "script:not([src])", "b", "td > tr"):
        expect(scope.locator(selector)).to_have_count(0)


def test_subject_sender_and_file_name_show_as_text_in_the_live_list_and_the_ticket(page, desk, dovecot):
    server, mailbox = desk
    watch = Watch(page)
    sign_in(page, server, ADMIN)
    page.goto(server.url("/tickets"))
    rows = page.locator("#ticket-rows")
    before = rows.locator("tr[data-ticket-id]").count()

    dovecot.deliver(mailbox, hostile_mail(mailbox))
    # the live list (app.js, no reload) shows the new row; its cells hold the exact characters
    row = rows.locator("tr[data-ticket-id]").first
    expect(rows.locator("tr[data-ticket-id]")).to_have_count(before + 1, timeout=15_000)
    expect(row.get_by_role("link")).to_have_text(SUBJECT)
    expect(row).to_contain_text(SENDER_NAME)
    expect(rows.locator("tr")).to_have_count(before + 1)  # "</td></tr><tr>" made no row
    assert_no_markup_elements(rows)
    watch.assert_quiet()

    page.reload()  # the same rows as the server renders them
    expect(row.get_by_role("link")).to_have_text(SUBJECT)
    expect(row).to_contain_text(SENDER_NAME)
    expect(rows.locator("tr")).to_have_count(before + 1)
    assert_no_markup_elements(rows)
    page.wait_for_timeout(1500)  # a refresh of the live list with an unchanged answer changes nothing
    expect(row.get_by_role("link")).to_have_text(SUBJECT)
    watch.assert_quiet()

    row.get_by_role("link").click()
    expect(page.locator("h1")).to_contain_text(SUBJECT)
    assert page.title().startswith(f"[#") and SUBJECT in page.title()
    article = page.locator("article.article").first
    expect(article.locator("header strong")).to_have_text(SENDER_NAME)
    shown_name = display_filename(FILE_NAME)
    assert "\u202e" not in shown_name and shown_name.endswith("gpj.exe")
    link = article.locator("ul.attachments a")
    expect(link).to_have_text(shown_name)
    assert_no_markup_elements(page.locator("main"))
    expect(page.frame_locator("iframe.mail-html").locator("p").first).to_contain_text("Our logo")
    watch.assert_quiet()

    with page.expect_download() as info:
        link.click()
    assert info.value.suggested_filename.endswith("gpj.exe")
    assert "\u202e" not in info.value.suggested_filename


def test_the_mail_frame_shows_the_mail_and_its_url_alone_is_sandboxed(page, desk, dovecot):
    server, mailbox = desk
    sign_in(page, server, ADMIN)
    dovecot.deliver(mailbox, hostile_mail(mailbox))
    page.goto(server.url("/tickets"))
    page.locator("#ticket-rows tr[data-ticket-id]").first.get_by_role("link").click()

    frame_element = page.locator("iframe.mail-html").first
    frame = page.frame_locator("iframe.mail-html").first
    expect(frame.locator("p").first).to_contain_text("Our logo")
    # the inline image (our login-protected attachment URL) loaded and decoded inside the frame
    logo = frame.locator("img[alt=logo]")
    expect(logo).to_be_visible()
    expect(logo).to_have_js_property("naturalWidth", 40)
    # sized to the mail by app.js from outside (60 lines are far taller than an unsized frame's 150 px)
    page.wait_for_function("f => f.getBoundingClientRect().height > 900", arg=frame_element.element_handle())

    body_url = frame_element.get_attribute("src")
    direct = page.context.new_page()
    response = direct.goto(server.url(body_url))
    expect(direct.locator("p").first).to_contain_text("Our logo")
    # an opaque origin: the document cannot read the session's cookies or reach the app's pages
    assert direct.evaluate("() => self.origin") == "null"
    assert direct.evaluate("() => { try { return document.cookie; } catch (e) { return e.name; } }") \
        == "SecurityError"
    policy = response.headers["content-security-policy"]
    assert re.search(r"(^|;)\s*sandbox allow-popups allow-popups-to-escape-sandbox\s*(;|$)", policy), policy
    assert "allow-scripts" not in policy and "allow-same-origin" not in policy
    direct.close()
