"""/account/tokens in Chromium against the real `connector serve`: create, copy, use, revoke; and the
session ends in the browser when the same person signs out elsewhere."""
from __future__ import annotations

import re

import pytest
import requests
from playwright.sync_api import Page, expect

from tests.conftest import DATABASE_BACKENDS
from tests.support.app import PASSWORD
from tests.support.live import LiveServer

AGENT = "tokens@helpdesk.test"


@pytest.fixture(scope="module", params=DATABASE_BACKENDS)
def server(request, tmp_path_factory, idp, ca, make_module_database_url):
    server = LiveServer(tmp_path_factory.mktemp("e2e-tokens"), idp_url=idp.url, ca_path=ca.ca_path,
                        database_url=make_module_database_url(request.param))
    server.create_user(AGENT, "agent")
    with server:
        yield server


def sign_in(page: Page, server) -> None:
    page.goto(server.url("/login"))
    page.get_by_label("Email").fill(AGENT)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text(AGENT, exact=False).first).to_be_visible()


def test_create_copy_use_and_revoke_a_token(page: Page, context, server):
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.base_url)
    problems = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    sign_in(page, server)
    page.get_by_role("link", name="API tokens").click()
    expect(page).to_have_url(re.compile(r"/account/tokens$"))
    page.get_by_label("Name").fill("browser-made")
    page.get_by_label("Expires").select_option(label="in 7 days")
    page.get_by_role("button", name="Create token").click()
    expect(page.get_by_text("Copy it now: it is shown only this once.")).to_be_visible()
    token = page.get_by_label("Token").input_value()
    assert re.fullmatch(r"ctr_[A-Za-z0-9_-]{40,}", token)
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == token
    api = requests.get(server.url("/api/v1/accounts"), headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert api.status_code == 200

    page.goto(server.url("/account/tokens"))
    row = page.locator("table.mine tr", has_text="browser-made")
    expect(row.locator("td.last-used")).not_to_have_text("never")
    assert token not in page.content()
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Revoke").click()
    expect(page.get_by_text("revoked: it stops working at once")).to_be_visible()
    expect(page.locator("table.mine tr", has_text="browser-made").locator("td.status")).to_contain_text("revoked")
    refused = requests.get(server.url("/api/v1/accounts"), headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    assert not [p for p in problems if "Content Security Policy" in p], problems


def test_signing_out_elsewhere_ends_this_browsers_session(page: Page, browser, server):
    sign_in(page, server)
    other = browser.new_context()
    try:
        elsewhere = other.new_page()
        sign_in(elsewhere, server)
        elsewhere.get_by_role("button", name="Sign out").click()
        expect(elsewhere).to_have_url(re.compile(r"/login$"))
    finally:
        other.close()
    page.goto(server.url("/accounts"))
    expect(page).to_have_url(re.compile(r"/login\?next="))
    expect(page.get_by_text("Your session has ended")).to_be_visible()
