"""Google (Gmail and Google Workspace) as an OpenID provider: the OAuth client check, access tokens for
IMAP/SMTP (XOAUTH2) from a mailbox's stored tokens, and revoking them.

Discovery is in google_discovery.py, what a sign-in must contain and the stored tokens in
google_signin.py. The browser leg of a connect runs through authlib's Flask client in
connector/web/google_connect.py, built from `GoogleIdentity.oauth_client_settings()`; this module
imports no web code, so the worker uses it too:

    identity = google_registration.identity(session, settings, vault)   # None: no Google app
    access_token, new_json = identity.mail_token(token_json)             # raises IdentityError
    if new_json is not None: store it (encrypted) before using the token
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import requests
from authlib.integrations.requests_client import OAuth2Session, OAuthError

from . import google_discovery as discovery
from .errors import Explained
from .google_discovery import HTTP_TIMEOUT
from .google_errors import GoogleContext, explain_google, refresh_refused
from .google_revoke import revoke
from .google_signin import (MAIL_SCOPE, UNREADABLE_TOKENS, GoogleSignIn, GoogleTokenError, GoogleTokens,
                            after_refresh, signed_in)
from .microsoft import IdentityError

__all__ = ["CONNECT_SCOPES", "MAIL_SCOPE", "GoogleApp", "GoogleIdentity", "GoogleSignIn", "GoogleTokenError",
           "GoogleTokens"]

log = logging.getLogger(__name__)

CONNECT_SCOPES = ("openid", "email", MAIL_SCOPE)
REFRESH_MARGIN_SECONDS = 300  # an access token with less left is refreshed before use
DAY = 86400.0
# The code of the registration check: any value that is no authorization code of this client.
CHECK_CODE = "connector-registration-check"


@dataclass(frozen=True)
class GoogleApp:
    """The OAuth client (type "Web application") from the Google Cloud console's Credentials page."""
    client_id: str
    client_secret: str


class GoogleIdentity:
    """One OAuth client at one authority (https://accounts.google.com, or the test stand-in)."""

    def __init__(self, app: GoogleApp, authority: str, ca_bundle: str | None = None, callback_url: str = "",
                 hosted_domain: str = "") -> None:
        self.app = app
        self.authority = authority.rstrip("/")
        self.ca_bundle = ca_bundle
        self.callback_url = callback_url
        self.hosted_domain = hosted_domain  # the mailbox's Workspace domain, named in its errors (tokens.py)

    @property
    def metadata_url(self) -> str:
        return discovery.metadata_url(self.authority)

    def metadata(self, *, fresh: bool = False) -> dict:
        return discovery.metadata(self.authority, self.ca_bundle, fresh=fresh)

    def _unreachable(self, exc: Exception) -> IdentityError:
        return discovery.unreachable(self.authority, exc)

    def context(self, hosted_domain: str = "") -> GoogleContext:
        return GoogleContext(client_id=self.app.client_id, callback_url=self.callback_url, authority=self.authority,
                             hosted_domain=hosted_domain or self.hosted_domain)

    def _session(self) -> OAuth2Session:
        session = OAuth2Session(self.app.client_id, self.app.client_secret, default_timeout=HTTP_TIMEOUT)
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override `verify` otherwise
        session.verify = self.ca_bundle or True
        return session

    # -- the OAuth client ---------------------------------------------------------------------------------
    def check_registration(self) -> None:
        """Discovery, then a token request that only a client with the right secret gets past.

        Google authenticates the client before it looks at the grant: an authorization code that is
        none of this client's is `invalid_grant` for the right secret, and `invalid_client` for a wrong
        secret ("Unauthorized") or an unknown client ID ("The OAuth client was not found."). Nothing is
        issued and no user is involved. The redirect URI and the consent screen cannot be checked
        without a user: the page lists them instead.
        """
        token_endpoint = self.metadata(fresh=True)["token_endpoint"]
        with self._session() as session:
            try:
                session.fetch_token(token_endpoint, grant_type="authorization_code", code=CHECK_CODE,
                                    redirect_uri=self.callback_url)
            except OAuthError as exc:
                if exc.error == "invalid_grant":
                    return  # the client authenticated; only the (dummy) code was refused
                raise IdentityError(self._client_refused(exc.error, exc.description)) from None
            except (requests.exceptions.RequestException, ValueError) as exc:
                raise self._unreachable(exc) from None
        raise IdentityError(Explained(f"{self.authority} issued tokens for a made-up authorization code: it is not "
                                      "Google's sign-in service; check [google] authority."))

    def _client_refused(self, error: str | None, description: str | None) -> Explained:
        if error == "invalid_client":
            if "not found" in (description or "").lower():
                return Explained(f"Google does not know the Client ID {self.app.client_id} (invalid_client: \"The "
                                 "OAuth client was not found.\"): copy it from Google Cloud console > Credentials > "
                                 "OAuth 2.0 Client IDs, and check it was not deleted.")
            return Explained("The client secret is wrong (invalid_client): copy the Client secret of this OAuth "
                             "client from Google Cloud console > Credentials (or add a new secret there) and paste "
                             "it here.")
        return explain_google(error, description, self.context())

    def oauth_client_settings(self) -> dict[str, Any]:
        """The keyword arguments authlib's OAuth().register() takes for the connect flow."""
        return {
            "client_id": self.app.client_id,
            "client_secret": self.app.client_secret,
            "server_metadata_url": self.metadata_url,
            "client_kwargs": {"scope": " ".join(CONNECT_SCOPES), "code_challenge_method": "S256",
                              "verify": self.ca_bundle or True, "trust_env": False,
                              "default_timeout": HTTP_TIMEOUT},
        }

    def claims_options(self) -> dict[str, dict]:
        """What the ID token must say besides its signature (JWKS) and the nonce: our issuer (Google
        writes it with or without https://), us as the audience, a subject and an expiry."""
        issuer = str(self.metadata()["issuer"])
        issuers = [issuer] + ([issuer.removeprefix("https://")] if issuer.startswith("https://") else [])
        return {"iss": {"essential": True, "values": issuers},
                "aud": {"essential": True, "value": self.app.client_id},
                "sub": {"essential": True},
                "exp": {"essential": True}}

    def signed_in(self, token: dict, *, now: float | None = None) -> GoogleSignIn:
        return signed_in(token, now=now)

    # -- tokens for IMAP/SMTP ---------------------------------------------------------------------------
    def mail_token(self, token_json: str, *, force_refresh: bool = False, hosted_domain: str = "",
                   now: float | None = None) -> tuple[str, str | None]:
        """An access token for IMAP/SMTP XOAUTH2 (scope https://mail.google.com/).

        Returns (access_token, new_json): `new_json` is the mailbox's token JSON after a refresh, to be
        stored (encrypted) at once, else None. The stored access token is used while it has
        REFRESH_MARGIN_SECONDS or more left, unless `force_refresh` (the server refused it early).
        Raises GoogleTokenError (an IdentityError): `needs_reconnect` when only a new sign-in helps
        (revoked, expired after 7 days in Testing, password change, disuse, another client), with the
        reason in `explained.message`; otherwise a transient failure to retry later.
        """
        try:
            tokens = GoogleTokens.from_json(token_json)
        except (ValueError, TypeError):
            raise GoogleTokenError(Explained(UNREADABLE_TOKENS, None, True), reason="unreadable") from None
        now = time.time() if now is None else now
        if not force_refresh and tokens.access_token and tokens.expires_at - now >= REFRESH_MARGIN_SECONDS:
            return tokens.access_token, None
        refreshed = self._refresh(tokens, now, hosted_domain)
        return refreshed.access_token, refreshed.to_json()

    def access_token(self, token_json: str, home_account_id: str | None, scopes: list[str], *,
                     force_refresh: bool = False) -> tuple[str, str | None]:
        """tokens.refreshed_token's interface (that of MicrosoftIdentity.access_token): Google's only
        purpose is IMAP/SMTP (`https://mail.google.com/`), and a mailbox's tokens name no home account."""
        if list(scopes) != [MAIL_SCOPE]:
            raise GoogleTokenError(Explained(f"A Google mailbox has no token for {' '.join(scopes)}."), reason="scope")
        return self.mail_token(token_json, force_refresh=force_refresh)

    def _refresh(self, tokens: GoogleTokens, now: float, hosted_domain: str) -> GoogleTokens:
        try:
            token_endpoint = self.metadata()["token_endpoint"]
        except IdentityError as exc:  # discovery failed: Google (or the network) is down, not the sign-in
            raise GoogleTokenError(exc.explained) from None
        with self._session() as session:
            try:
                answer = session.refresh_token(token_endpoint, refresh_token=tokens.refresh_token)
            except OAuthError as exc:
                raise self._refresh_error(exc, tokens, now, hosted_domain) from None
            except (requests.exceptions.RequestException, ValueError) as exc:
                raise GoogleTokenError(self._unreachable(exc).explained) from None
        return after_refresh(tokens, answer, now)

    def _refresh_error(self, exc: OAuthError, tokens: GoogleTokens, now: float,
                       hosted_domain: str) -> GoogleTokenError:
        last_good = tokens.refreshed_at or tokens.issued_at
        explained, reason = refresh_refused(
            exc.error or "", exc.description, self.context(hosted_domain),
            token_age_days=(now - tokens.issued_at) / DAY,
            days_valid_after_issue=(last_good - tokens.issued_at) / DAY,
            days_unused=(now - last_good) / DAY)
        log.info("Google refused a token refresh: %s (%s)", exc.error, reason)
        return GoogleTokenError(explained, exc.error or "", reason)

    def revoke(self, token_json: str) -> None:
        """End the grant at Google (see google_revoke.revoke). Raises IdentityError."""
        revoke(self, token_json)
