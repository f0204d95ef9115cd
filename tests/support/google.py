"""Fixtures for the Google stand-in: import them into a test module (or list this module in
`pytest_plugins`), e.g. `from tests.support.google import google, google_org  # noqa: F401`.

- `google` (session): a started GoogleProvider on the session's test CA (`ca` of conftest).
- `make_google_org` / `google_org`: a fresh Workspace domain with an Internal web client whose
  redirect URI is the test app's callback; `org.user("alice")` adds alice@<domain>.
- `gmail_dovecot` (session): a Gmail-like Dovecot checking XOAUTH2 at the stand-in's tokeninfo.
"""
from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.google import Client, GoogleProvider, User

GOOGLE_CALLBACK = "http://localhost/auth/google/callback"
MAIL_SCOPES = "openid email https://mail.google.com/"
_counter = itertools.count(1)


@dataclass
class GoogleOrg:
    """A Workspace organization at the stand-in with one OAuth client."""

    provider: GoogleProvider
    client: Client
    domain: str

    @property
    def client_id(self) -> str:
        return self.client.client_id

    @property
    def secret(self) -> str:
        return self.client.secret

    def user(self, local_part: str = "alice", password: str = "pw", **kwargs: Any) -> User:
        """A Workspace account <local_part>@<domain> (kwargs: name, email_verified)."""
        return self.provider.add_user(f"{local_part}@{self.domain}", password, hd=self.domain,
                                      **kwargs)


@pytest.fixture(scope="session")
def google(ca):
    with GoogleProvider(ca) as provider:
        yield provider


@pytest.fixture
def make_google_org(google):
    """make_google_org(redirect_uri=..., **add_client_kwargs) -> GoogleOrg (Internal by default;
    pass user_type="external", publishing_status=... for a public app)."""
    def create(redirect_uri: str = GOOGLE_CALLBACK, **client_kwargs: Any) -> GoogleOrg:
        domain = f"gorg{next(_counter)}.test"
        client_kwargs.setdefault("domain", domain)
        client = google.add_client(None, None, [redirect_uri], **client_kwargs)
        return GoogleOrg(google, client, domain)
    return create


@pytest.fixture
def google_org(make_google_org) -> GoogleOrg:
    return make_google_org()


@pytest.fixture(scope="session")
def gmail_dovecot(ca, google):
    from tests.google.dovecot import GmailDovecot, dovecot_available

    if not dovecot_available():
        if os.environ.get("CI"):
            pytest.fail("Dovecot is not installed (apt-get install dovecot-imapd dovecot-lmtpd)")
        pytest.skip("Dovecot is not installed")
    # Not under pytest's basetemp: mail processes run as `dovecot` and must traverse the path.
    workdir = Path(tempfile.mkdtemp(prefix="connector-gmail-"))
    server = GmailDovecot(workdir, ca, google.url).start()
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)
