"""End to end in Chromium against the real `connector serve` and the test identity provider.

An admin registers the Azure app on "Microsoft 365 app", an agent clicks "Connect Microsoft 365" (a form
POST whose redirect to the authority the page's CSP must allow), signs in and consents on the provider's
pages, and lands back on the mailbox list; "Reconnect" goes the same way; the Cancel and wrong-secret
paths end on their sentences. No page may report a Content-Security-Policy violation.
"""
from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.fernet import Fernet
from playwright.sync_api import Page, expect
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.conftest import DATABASE_BACKENDS
from tests.support.app import PASSWORD
from tests.support.live import LiveServer

ADMIN = "admin@helpdesk.test"
AGENT = "agent@helpdesk.test"


@pytest.fixture(scope="module", params=DATABASE_BACKENDS)
def server(request, tmp_path_factory, idp, ca, make_module_database_url):
    """One `connector serve` for this module and database (each test registers its own org and mailboxes)."""
    server = LiveServer(tmp_path_factory.mktemp("e2e"), idp_url=idp.url, ca_path=ca.ca_path,
                        database_url=make_module_database_url(request.param))
    server.create_user(ADMIN, "admin")
    server.create_user(AGENT, "agent")
    with server:
        yield server


@pytest.fixture
def live_org(make_org, server):
    """A tenant whose single-tenant app has the live server's callback URL as redirect URI."""
    return make_org(redirect_uri=server.callback_url)


@pytest.fixture
def csp_reports(page: Page) -> list[str]:
    """Chromium's console messages about the Content-Security-Policy (a blocked form says so there)."""
    reports: list[str] = []
    page.on("console", lambda message: reports.append(message.text)
            if "Content Security Policy" in message.text else None)
    return reports


def sign_in(page: Page, server, email: str) -> None:
    page.goto(server.url("/login"))
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text(email, exact=False).first).to_be_visible()


def sign_out(page: Page) -> None:
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login$"))


def register_app(page: Page, org, secret: str | None = None) -> None:
    page.get_by_role("link", name="Microsoft 365 app").click()
    expect(page).to_have_url(re.compile(r"/admin/microsoft$"))
    page.get_by_label("Client ID").fill(org.client_id)
    page.get_by_label("Tenant ID").fill(org.tenant_id)
    page.get_by_label("Client secret").fill(org.secret if secret is None else secret)
    page.get_by_role("button", name="Save").click()


def consent_at_idp(page: Page, server, idp, mailbox: str, password: str, accept: bool = True) -> None:
    page.get_by_role("button", name="Connect Microsoft 365").click()
    # "Connect Microsoft 365" sends the browser straight to the authority
    sign_in_at_idp(page, idp, mailbox, password, consent="accept" if accept else "cancel")


def sign_in_at_idp(page: Page, idp, email: str, password: str, consent: str | None = "accept") -> None:
    """On the provider's pages: sign in, then Accept or Cancel the consent page (None: it is not shown,
    because this user consented before)."""
    expect(page).to_have_url(re.compile("^" + re.escape(idp.url) + "/"))
    page.get_by_label("Email, phone, or Skype").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    if consent is not None:
        expect(page.get_by_text("Read and write access to mailboxes via IMAP")).to_be_visible()
        page.get_by_role("button", name="Accept" if consent == "accept" else "Cancel").click()


def stored_tokens(server, address: str) -> set[str]:
    """The tokens in the mailbox's cache, decrypted with the server's own key file."""
    engine = create_engine(server.database_url, poolclass=NullPool)
    try:
        with engine.connect() as db:
            sealed = bytes(db.execute(text("SELECT token_cache_enc FROM accounts WHERE address = :address"),
                                      {"address": address}).scalar_one())
    finally:
        engine.dispose()
    cache = json.loads(Fernet((server.data_dir / "encryption.key").read_bytes().strip()).decrypt(sealed))
    return {entry["secret"] for section in ("AccessToken", "RefreshToken", "IdToken")
            for entry in cache.get(section, {}).values()}


def test_admin_registers_the_app_and_an_agent_connects_a_mailbox(page, server, live_org, idp, tmp_path,
                                                                  csp_reports):
    sign_in(page, server, ADMIN)
    register_app(page, live_org)
    expect(page.get_by_role("status")).to_contain_text("Saved")
    expect(page.get_by_text(live_org.client_id, exact=True).first).to_be_visible()
    expect(page.get_by_text(server.callback_url, exact=True)).to_be_visible()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.base_url)
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == server.callback_url
    assert live_org.secret not in page.content()
    page.screenshot(path=str(tmp_path / "admin-microsoft.png"), full_page=True)
    sign_out(page)

    mailbox = live_org.add_user("alice", password="alice-pw")
    callback_codes = []
    page.on("request", lambda request: callback_codes.extend(
        parse_qs(urlsplit(request.url).query).get("code", [])) if "/auth/microsoft/callback" in request.url else None)
    sign_in(page, server, AGENT)
    page.get_by_role("link", name="Mailboxes").click()
    consent_at_idp(page, server, idp, mailbox, "alice-pw")
    expect(page).to_have_url(server.url("/accounts"))
    row = page.locator("tr", has_text=mailbox)
    expect(row).to_be_visible()
    expect(row.locator(".status")).to_have_text("connected")
    expect(page.get_by_role("status")).to_contain_text(f"{mailbox} is connected")
    expect(row.locator(".owner")).to_have_text(re.compile("^" + re.escape(AGENT)))
    expect(row.get_by_role("button", name="Reconnect")).to_be_visible()
    expect(row.get_by_role("button", name="Disconnect")).to_be_visible()
    page.screenshot(path=str(tmp_path / "accounts.png"), full_page=True)

    # Reconnect: a form too, to the authority with the mailbox as login hint; consent was given already
    row.get_by_role("button", name="Reconnect").click()
    expect(page.get_by_label("Email, phone, or Skype")).to_have_value(mailbox)
    sign_in_at_idp(page, idp, mailbox, "alice-pw", consent=None)
    expect(page).to_have_url(server.url("/accounts"))
    expect(page.get_by_role("status")).to_contain_text(f"{mailbox} is reconnected")
    expect(page.locator("tr", has_text=mailbox)).to_have_count(1)
    assert csp_reports == []

    # nothing secret reached the server's output: not the client secret, the code, or any token
    secrets = {live_org.secret, *callback_codes, *stored_tokens(server, mailbox)}
    assert len(secrets) >= 4
    logs = server.logs()
    assert "connected by" in logs  # the server did log the connection
    for secret in secrets:
        assert secret not in logs and secret not in page.content()


def test_cancel_at_the_consent_page_says_what_to_do(page, server, live_org, idp, csp_reports):
    sign_in(page, server, ADMIN)
    register_app(page, live_org)
    expect(page.get_by_role("status")).to_contain_text("Saved")
    mailbox = live_org.add_user("bob", password="bob-pw")
    page.get_by_role("link", name="Mailboxes").click()
    consent_at_idp(page, server, idp, mailbox, "bob-pw", accept=False)
    expect(page).to_have_url(re.compile(r"/auth/microsoft/callback\?"))
    alert = page.locator("#connect-error")
    expect(alert).to_contain_text("The permissions were declined at Microsoft (AADSTS65004)")
    expect(alert).to_contain_text("click \"Connect Microsoft 365\" again and choose Accept")
    assert "Traceback" not in page.content()
    page.get_by_role("link", name="Back to mailboxes").click()
    expect(page).to_have_url(server.url("/accounts"))
    expect(page.locator("tr", has_text=mailbox)).to_have_count(0)
    assert csp_reports == []


def test_a_wrong_secret_is_explained_on_save(page, server, live_org):
    sign_in(page, server, ADMIN)
    register_app(page, live_org, secret="not-the-secret")
    alert = page.locator("#registration-error")
    expect(alert).to_contain_text("The client secret is wrong (AADSTS7000215)")
    expect(alert).to_contain_text("paste the secret's Value (not its Secret ID)")
    # nothing was stored: the registration shown (if any) is not this one
    expect(page.locator("#current-client-id", has_text=live_org.client_id)).to_have_count(0)
    expect(page.get_by_label("Client secret")).to_have_value("")  # the secret is not sent back either
    assert "not-the-secret" not in page.content()
    assert "not-the-secret" not in server.logs()
