"""Driving the app's Google side in tests: the "Google app" page, "Connect Google", the callback.

Import the fixtures into a test module:
    from tests.support.google_app import app_config, google, google_org, make_google_org  # noqa: F401
`app_config` then points [google] authority at the stand-in (the `app`, `client`, `make_app` fixtures
of conftest use it).
"""
from __future__ import annotations

import html
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from connector import google_registration
from connector.models import Account
from tests.google import complete_authorization
from tests.support.app import csrf_token, finish_connect, post_form
from tests.support.google import GoogleOrg, google, google_org, make_google_org  # noqa: F401


@pytest.fixture
def app_config(app_config, google):  # noqa: F811 - conftest's, plus the stand-in as Google's authority
    return {**app_config, "google": {"authority": google.url}}


def text(response) -> str:
    return response.get_data(as_text=True)


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def save_google_app(client, org: GoogleOrg | None = None, *, client_id: str | None = None,
                    secret: str | None = None):
    """POST the "Google app" form as the signed-in client."""
    page = client.get("/admin/google")
    return client.post("/admin/google", data={
        "client_id": client_id if client_id is not None else org.client_id,
        "client_secret": secret if secret is not None else org.secret,
        "csrf_token": csrf_token(text(page))})


def register_google(app, org: GoogleOrg) -> None:
    """Store the Google app through the service (checked against the stand-in), without the page."""
    rt = app.extensions["connector"]
    with rt.db.session() as session:
        google_registration.save(session, rt.settings, rt.vault, client_id=org.client_id,
                                 client_secret=org.secret, by="test")
        session.commit()


def start_google_connect(client) -> str:
    """The "Connect Google" form: a POST with the CSRF token; returns the authorize URL at the stand-in."""
    response = post_form(client, "/accounts/connect/google")
    assert response.status_code == 302, text(response)
    return response.headers["Location"]


def start_google_reconnect(client, account_id: int) -> str:
    response = post_form(client, f"/accounts/{account_id}/reconnect")
    assert response.status_code == 302, text(response)
    return response.headers["Location"]


def connect_google(client, ca_path, email: str, password: str = "pw", **driver):
    """The whole flow without a browser: app -> stand-in sign-in and consent -> callback."""
    redirect = complete_authorization(start_google_connect(client), email, password, ca_path=ca_path, **driver)
    return finish_connect(client, redirect)


def connect_error(response) -> str:
    match = re.search(r'<p class="problem" role="alert" id="connect-error">(.*?)</p>', text(response), re.S)
    assert match, f"no explanation on the page (HTTP {response.status_code}): {text(response)[:500]}"
    return html.unescape(match.group(1))


def google_accounts(app) -> list[Account]:
    with app.extensions["connector"].db.session() as session:
        return list(session.scalars(select(Account).order_by(Account.id)))
