"""Driving the app in tests: sign in, register the Azure app, connect a mailbox through the test IdP."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from tests.idp.driver import complete_authorization

PASSWORD = "correct horse battery"


@dataclass
class Org:
    """A tenant at the test IdP with one app registration, and helpers to add people to it."""
    idp: object
    tenant: object
    app: object
    secret: str
    domain: str
    users: list = field(default_factory=list)

    @property
    def client_id(self) -> str:
        return self.app.client_id

    @property
    def tenant_id(self) -> str:
        return self.tenant.tenant_id

    def add_user(self, local: str, password: str = "pw", **kwargs) -> str:
        email = f"{local}@{self.domain}"
        self.idp.add_user(self.tenant, email, password=password, **kwargs)
        return email


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or \
        re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def login(client, email: str, password: str = PASSWORD):
    page = client.get("/login")
    return client.post("/login", data={"email": email, "password": password,
                                       "csrf_token": csrf_token(page.get_data(as_text=True))})


def save_registration(client, org: Org, secret: str | None = None, tenant: str | None = None,
                      client_id: str | None = None):
    page = client.get("/admin/microsoft")
    return client.post("/admin/microsoft", data={
        "client_id": client_id or org.client_id, "tenant": tenant or org.tenant_id,
        "client_secret": org.secret if secret is None else secret,
        "csrf_token": csrf_token(page.get_data(as_text=True))})


def post_form(client, path: str, data: dict | None = None, page: str = "/accounts"):
    """POST `data` to `path` with a CSRF token taken from `page` (any page of the signed-in user has one)."""
    token = csrf_token(client.get(page).get_data(as_text=True))
    return client.post(path, data={"csrf_token": token, **(data or {})})


def start_connect(client, mailbox: str | None = None):
    """The "Connect Microsoft 365" (or, with `mailbox`, "Connect a shared mailbox") form: a POST with the
    CSRF token; returns the authorize URL at the IdP."""
    response = post_form(client, "/accounts/connect/microsoft", {"mailbox": mailbox} if mailbox else None)
    assert response.status_code == 302, response.get_data(as_text=True)
    return response.headers["Location"]


def start_reconnect(client, account_id: int):
    """The "Reconnect" form of one mailbox; returns the authorize URL at the IdP."""
    response = post_form(client, f"/accounts/{account_id}/reconnect")
    assert response.status_code == 302, response.get_data(as_text=True)
    return response.headers["Location"]


def finish_connect(client, redirect_url: str):
    parts = urlsplit(redirect_url)
    return client.get(parts.path, query_string=parts.query)


def connect_mailbox(client, ca_path, email: str, password: str = "pw", consent: bool = True,
                    mailbox: str | None = None):
    """The whole connect flow without a browser: app -> IdP sign-in and consent -> callback.
    `mailbox` connects that shared mailbox with `email` as the delegate."""
    authorize_url = start_connect(client, mailbox)
    redirect = complete_authorization(authorize_url, email, password, consent=consent, ca_path=ca_path)
    return finish_connect(client, redirect)


def reconnect_mailbox(client, ca_path, account_id: int, email: str, password: str = "pw"):
    """The "Reconnect" button's whole flow, signing in as `email`."""
    redirect = complete_authorization(start_reconnect(client, account_id), email, password, ca_path=ca_path)
    return finish_connect(client, redirect)


def connector_env(settings, **extra: str) -> dict:
    """Environment for `connector` subprocesses that share an app's database, keys and servers."""
    import os

    env = dict(os.environ)
    env.update({
        "CONNECTOR_CONFIG": os.devnull,
        "CONNECTOR_APP_DATA_DIR": settings.app.data_dir,
        "CONNECTOR_APP_BASE_URL": settings.app.base_url,
        "CONNECTOR_DATABASE_URL": settings.database.url,
        "CONNECTOR_MICROSOFT_AUTHORITY_HOST": settings.microsoft.authority_host,
        "CONNECTOR_MICROSOFT_IMAP_HOST": settings.microsoft.imap_host,
        "CONNECTOR_MICROSOFT_IMAP_PORT": str(settings.microsoft.imap_port),
        "CONNECTOR_MICROSOFT_SMTP_HOST": settings.microsoft.smtp_host,
        "CONNECTOR_MICROSOFT_SMTP_PORT": str(settings.microsoft.smtp_port),
        "CONNECTOR_TLS_CA_BUNDLE": settings.tls.ca_bundle,
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env
