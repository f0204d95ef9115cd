"""End to end in Chromium: the real `connector serve`, the Google stand-in's pages over HTTPS.

An admin saves the OAuth client on "Google app"; an agent clicks "Connect Google" (a form POST whose
redirect to Google the page's CSP must allow), signs in and ticks the Gmail permission on the
stand-in's consent screen, and lands back on the mailbox list; Reconnect goes the same way with the
mailbox as login hint; Cancel and an unticked Gmail permission end on their sentences; a Microsoft
mailbox and a Google one are connected side by side. No page may report a CSP violation, and no secret
or token reaches the server's output.
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
from tests.e2e.test_connect import consent_at_idp, register_app, sign_in, sign_out
from tests.support.google import make_google_org  # noqa: F401
from tests.support.live import LiveServer

ADMIN = "admin@helpdesk.test"
AGENT = "agent@helpdesk.test"
GMAIL = "Read, compose, send, and permanently delete all your email from Gmail"


@pytest.fixture(scope="module", params=DATABASE_BACKENDS)
def server(request, tmp_path_factory, idp, google, ca, make_module_database_url):
    server = LiveServer(tmp_path_factory.mktemp("e2e-google"), idp_url=idp.url, ca_path=ca.ca_path,
                        database_url=make_module_database_url(request.param),
                        env={"CONNECTOR_GOOGLE_AUTHORITY": google.url})
    server.create_user(ADMIN, "admin")
    server.create_user(AGENT, "agent")
    with server:
        yield server


def google_callback(server) -> str:
    return server.url("/auth/google/callback")


@pytest.fixture
def live_google_org(make_google_org, server):
    """A Workspace organization whose Internal OAuth client has the live server's callback."""
    return make_google_org(redirect_uri=google_callback(server))


@pytest.fixture
def csp_reports(page: Page) -> list[str]:
    reports: list[str] = []
    page.on("console", lambda message: reports.append(message.text)
            if "Content Security Policy" in message.text else None)
    return reports


def save_google_app(page: Page, org, secret: str | None = None) -> None:
    page.get_by_role("link", name="Google app").click()
    expect(page).to_have_url(re.compile(r"/admin/google$"))
    page.get_by_label("Client ID").fill(org.client_id)
    page.get_by_label("Client secret").fill(org.secret if secret is None else secret)
    page.get_by_role("button", name="Save").click()


def sign_in_at_google(page: Page, google, email: str, password: str = "pw", *, tick_gmail: bool = True,
                      decision: str = "Continue", signed_in_there: bool = False, choose: bool = False) -> None:
    """On the stand-in's pages: the sign-in form (skipped when this browser is signed in there: then the
    account chooser, `choose`, unless the app sent a login hint), then the consent screen, where the Gmail
    permission is a checkbox."""
    expect(page).to_have_url(re.compile("^" + re.escape(google.url) + "/"))
    if choose:
        expect(page.get_by_role("heading", name="Choose an account")).to_be_visible()
        page.get_by_role("button", name=email).click()
    elif not signed_in_there:
        page.get_by_label("Email or phone").fill(email)
        page.get_by_label("Enter your password").fill(password)
        page.get_by_role("button", name="Next").click()
    expect(page.locator("#account")).to_have_text(email)
    if tick_gmail:
        page.get_by_label(GMAIL).check()
    page.get_by_role("button", name=decision).click()


def stored_tokens(server, address: str) -> dict:
    engine = create_engine(server.database_url, poolclass=NullPool)
    try:
        with engine.connect() as db:
            row = db.execute(text("SELECT provider, token_cache_enc FROM accounts WHERE address = :address"),
                             {"address": address}).one()
    finally:
        engine.dispose()
    assert row.provider == "google"
    return json.loads(Fernet((server.data_dir / "encryption.key").read_bytes().strip()).decrypt(bytes(row[1])))


def test_an_admin_saves_the_google_app_and_an_agent_connects_gmail(page, server, live_google_org, google, tmp_path,
                                                                     csp_reports):
    sign_in(page, server, ADMIN)
    save_google_app(page, live_google_org)
    expect(page.get_by_role("status")).to_contain_text("Saved. Google accepted the Client ID and the Client secret.")
    expect(page.locator("#current-client-id")).to_have_text(live_google_org.client_id)
    expect(page.locator("#secret-state")).to_contain_text(re.compile(r"set on \d{4}-\d\d-\d\d"))
    expect(page.get_by_text(google_callback(server), exact=True)).to_be_visible()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.base_url)
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == google_callback(server)
    expect(page.get_by_label("Client secret")).to_have_value("")
    assert live_google_org.secret not in page.content()
    page.screenshot(path=str(tmp_path / "admin-google.png"), full_page=True)
    sign_out(page)

    person = live_google_org.user("alice", password="alice-pw")
    codes: list[str] = []
    page.on("request", lambda request: codes.extend(parse_qs(urlsplit(request.url).query).get("code", []))
            if "/auth/google/callback" in request.url else None)
    sign_in(page, server, AGENT)
    page.get_by_role("link", name="Mailboxes").click()
    page.get_by_role("button", name="Connect Google").click()
    sign_in_at_google(page, google, person.email, "alice-pw")
    expect(page).to_have_url(server.url("/accounts"))
    expect(page.get_by_role("status")).to_contain_text(f"{person.email} is connected (Google).")
    row = page.locator("tr", has_text=person.email)
    expect(row.locator(".status")).to_have_text("connected")
    expect(row.locator(".provider")).to_have_text("Google")
    expect(row.locator(".owner")).to_have_text(re.compile("^" + re.escape(AGENT)))
    page.screenshot(path=str(tmp_path / "accounts-google.png"), full_page=True)
    first = stored_tokens(server, person.email)

    # Reconnect: to Google with the mailbox as login hint; this browser is signed in there, so the consent
    # screen comes at once (prompt=consent), and a new refresh token replaces the stored one
    row.get_by_role("button", name="Reconnect").click()
    expect(page).to_have_url(re.compile("^" + re.escape(google.url) + r"/o/oauth2/v2/auth\?"))
    assert parse_qs(urlsplit(page.url).query)["login_hint"] == [person.email]
    sign_in_at_google(page, google, person.email, signed_in_there=True)
    expect(page).to_have_url(server.url("/accounts"))
    expect(page.get_by_role("status")).to_contain_text(f"{person.email} is reconnected (Google).")
    expect(page.locator("tr", has_text=person.email)).to_have_count(1)
    second = stored_tokens(server, person.email)
    assert second["refresh_token"] != first["refresh_token"]
    assert csp_reports == []

    secrets = {live_google_org.secret, *codes, first["refresh_token"], first["access_token"],
               second["refresh_token"], second["access_token"]}
    assert len(secrets) >= 7
    logs = server.logs()
    assert "Google mailbox" in logs and "connected by" in logs  # the server did log it
    for secret in secrets:
        assert secret not in logs and secret not in page.content()


def test_cancel_and_an_unticked_gmail_permission_end_on_their_sentences(page, server, live_google_org, google,
                                                                         csp_reports):
    sign_in(page, server, ADMIN)
    save_google_app(page, live_google_org)
    expect(page.get_by_role("status")).to_contain_text("Saved")
    person = live_google_org.user("bob")
    page.get_by_role("link", name="Mailboxes").click()
    page.get_by_role("button", name="Connect Google").click()
    sign_in_at_google(page, google, person.email, tick_gmail=False, decision="Cancel")
    expect(page).to_have_url(re.compile(r"/auth/google/callback\?"))
    expect(page.locator("#connect-error")).to_contain_text("The access was not granted at Google")
    page.get_by_role("link", name="Back to mailboxes").click()
    page.get_by_role("button", name="Connect Google").click()
    sign_in_at_google(page, google, person.email, tick_gmail=False, choose=True)
    alert = page.locator("#connect-error")
    expect(alert).to_contain_text(f"You did not tick \"{GMAIL}\" on Google's consent screen")
    expect(alert).to_contain_text("click \"Connect Google\" again and tick it")
    assert "Traceback" not in page.content()
    page.get_by_role("link", name="Back to mailboxes").click()
    expect(page.locator("tr", has_text=person.email)).to_have_count(0)
    assert csp_reports == []


def test_a_microsoft_and_a_google_mailbox_side_by_side(page, server, make_org, live_google_org, idp, google,
                                                       csp_reports):
    ms_org = make_org(redirect_uri=server.callback_url)
    sign_in(page, server, ADMIN)
    register_app(page, ms_org)
    expect(page.get_by_role("status")).to_contain_text("Saved")
    save_google_app(page, live_google_org)
    expect(page.get_by_role("status")).to_contain_text("Saved")
    sign_out(page)

    ms_mailbox = ms_org.add_user("carol", password="carol-pw")
    gmail = live_google_org.user("dave")
    sign_in(page, server, AGENT)
    page.get_by_role("link", name="Mailboxes").click()
    expect(page.get_by_role("button", name="Connect Microsoft 365")).to_be_visible()
    consent_at_idp(page, server, idp, ms_mailbox, "carol-pw")
    expect(page).to_have_url(server.url("/accounts"))
    page.get_by_role("button", name="Connect Google").click()
    sign_in_at_google(page, google, gmail.email)
    expect(page).to_have_url(server.url("/accounts"))
    for address in (ms_mailbox, gmail.email):
        expect(page.locator("tr", has_text=address).locator(".status")).to_have_text("connected")
    expect(page.locator("tr", has_text=gmail.email).locator(".provider")).to_have_text("Google")
    expect(page.locator("tr", has_text=ms_mailbox).locator(".provider")).to_have_count(0)
    assert csp_reports == []
