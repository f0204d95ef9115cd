"""In Chromium: "Connect a shared mailbox" against the real `connector serve`, the test IdP and Dovecot.

The delegate signs in at the provider; before anything is stored the app signs in to Dovecot as the shared
address with the delegate's token, and Dovecot asks the IdP whether that delegate has Full Access. A delegate
with it ends on the mailbox list; one without it on a sentence that names the missing permission, with
nothing stored.
"""
from __future__ import annotations

import itertools
import re

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.conftest import DATABASE_BACKENDS

from tests.e2e.test_connect import csp_reports, register_app, sign_in, sign_in_at_idp, sign_out  # noqa: F401
from tests.support.live import LiveServer

ADMIN = "admin@shared.test"
AGENT = "agent@shared.test"
_n = itertools.count(1)


@pytest.fixture(scope="module", params=DATABASE_BACKENDS)
def server(request, tmp_path_factory, idp, ca, dovecot, make_module_database_url):
    server = LiveServer(tmp_path_factory.mktemp("e2e-shared"), idp_url=idp.url, ca_path=ca.ca_path,
                        database_url=make_module_database_url(request.param),
                        env={"CONNECTOR_MICROSOFT_IMAP_HOST": "127.0.0.1",
                             "CONNECTOR_MICROSOFT_IMAP_PORT": str(dovecot.imap_port)})
    server.create_user(ADMIN, "admin")
    server.create_user(AGENT, "agent")
    with server:
        yield server


@pytest.fixture
def live_org(make_org, server, page):
    """A tenant whose app the admin registered in the browser; the page is left signed out."""
    org = make_org(redirect_uri=server.callback_url)
    sign_in(page, server, ADMIN)
    register_app(page, org)
    expect(page.get_by_role("status")).to_contain_text("Saved")
    sign_out(page)
    return org


def connect_shared(page: Page, server, idp, shared: str, delegate: str) -> None:
    sign_in(page, server, AGENT)
    page.get_by_role("link", name="Mailboxes").click()
    page.get_by_text("Connect a shared mailbox").click()
    page.get_by_label("Shared mailbox address").fill(shared)
    page.get_by_role("button", name="Connect shared mailbox").click()
    sign_in_at_idp(page, idp, delegate, "pw")


def stored_addresses(server) -> list[str]:
    engine = create_engine(server.database_url, poolclass=NullPool)
    try:
        with engine.connect() as db:
            return list(db.execute(text("SELECT address FROM accounts ORDER BY id")).scalars())
    finally:
        engine.dispose()


def test_a_delegate_with_full_access_connects_the_shared_mailbox(page, server, live_org, idp, csp_reports):
    shared = f"helpdesk{next(_n)}@{live_org.domain}"
    delegate = live_org.add_user(f"delegate{next(_n)}")
    idp.grant_mailbox_access(delegate, shared)
    connect_shared(page, server, idp, shared, delegate)
    expect(page).to_have_url(server.url("/accounts"))
    expect(page.get_by_role("status")).to_contain_text(f"{shared} is connected")
    row = page.locator("tr", has_text=shared)
    expect(row.locator(".status")).to_have_text("connected")
    expect(row.locator(".address")).to_contain_text(f"via {delegate}")
    expect(row.locator(".owner")).to_have_text(re.compile("^" + re.escape(AGENT)))
    assert shared in stored_addresses(server)
    assert csp_reports == []


def test_a_delegate_without_full_access_is_told_what_is_missing(page, server, live_org, idp, csp_reports):
    shared = f"helpdesk{next(_n)}@{live_org.domain}"
    delegate = live_org.add_user(f"outsider{next(_n)}")
    connect_shared(page, server, idp, shared, delegate)
    expect(page).to_have_url(re.compile(r"/auth/microsoft/callback\?"))
    expect(page.locator("#connect-error")).to_have_text(
        f"{delegate} has no Full Access to {shared}: an Exchange admin grants it with Add-MailboxPermission "
        f"-Identity {shared} -User {delegate} -AccessRights FullAccess, then connect again.")
    page.get_by_role("link", name="Back to mailboxes").click()
    expect(page.locator("tr", has_text=shared)).to_have_count(0)
    assert shared not in stored_addresses(server)
    assert "Traceback" not in server.logs()
    assert csp_reports == []
