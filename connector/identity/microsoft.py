"""Microsoft identity platform v2.0 through msal: registration check, connect flow, silent refresh.

Everything reaches the authority through `authority_host` and the configured CA bundle, so national
clouds and the test identity provider are a configuration change, not a code path. Metadata, ID token
checks and error sentences are in authority.py.
"""
from __future__ import annotations

import logging
import warnings

import msal
import requests

from .authority import (GENERIC_TENANTS, GRAPH_SCOPES, HTTP_TIMEOUT, IMAP_SCOPE, MAIL_SCOPES,
                        SMTP_SCOPE, AuthorityClient, Connected, IdentityError, Registration, http_session)
from .errors import Explained

__all__ = ["CONNECT_SCOPES", "GENERIC_TENANTS", "GRAPH_SCOPES", "IMAP_SCOPE", "MAIL_SCOPES", "SMTP_SCOPE", "Connected",
           "IdentityError", "MicrosoftIdentity", "Registration", "http_session"]
log = logging.getLogger(__name__)

# msal adds offline_access, openid and profile itself; "email" we ask for explicitly.
CONNECT_SCOPES = MAIL_SCOPES + ["email"]

STATE_MISMATCH = ("This sign-in answer does not belong to a sign-in started here (the state does not match): it "
                  "was used already, or it was forged. Start again with \"Connect Microsoft 365\".")


class MicrosoftIdentity(AuthorityClient):
    """The app's flows through msal: the registration check, the connect flow, tokens from a mailbox's cache."""

    def _app(self, cache: msal.TokenCache | None = None) -> msal.ConfidentialClientApplication:
        try:
            return msal.ConfidentialClientApplication(
                self.registration.client_id,
                client_credential=self.registration.client_secret,
                authority=self.authority,
                instance_discovery=False,
                http_client=self._http,
                token_cache=cache,
                timeout=HTTP_TIMEOUT,
            )
        except ValueError as exc:  # msal raises ValueError for a tenant the authority does not know
            raise self._discovery_error(exc) from None
        except requests.exceptions.RequestException as exc:
            raise self._unreachable(exc) from None

    def check_registration(self) -> None:
        """Metadata discovery, then (for a specific tenant) a client-credentials request that proves the secret."""
        self.discover()
        if self.registration.tenant.lower() in GENERIC_TENANTS:
            return  # client credentials need a specific tenant; the secret is proved at the first connection
        app = self._app()
        try:
            result = app.acquire_token_for_client(scopes=["https://graph.microsoft.com/.default"])
        except requests.exceptions.RequestException as exc:
            raise self._unreachable(exc) from None
        if "error" in result:
            raise self._explain(result)

    # -- connect flow ---------------------------------------------------------------------------
    def start_connect(self, redirect_uri: str, login_hint: str | None = None,
                      scopes: list[str] | None = None) -> dict:
        """Begin the authorization-code flow (PKCE, state, nonce); keep the returned dict until the callback.
        `scopes`: those of the mailbox's transport (transport/choice.py), IMAP and SMTP by default."""
        app = self._app()
        try:
            with warnings.catch_warnings():
                # msal recommends form_post; a cross-site POST would not carry our SameSite=Lax session
                # cookie, so the callback comes as a query (state, nonce and PKCE protect it).
                warnings.filterwarnings("ignore", message="response_mode='form_post'")
                return app.initiate_auth_code_flow(scopes or CONNECT_SCOPES, redirect_uri=redirect_uri,
                                                   prompt="select_account", login_hint=login_hint or None,
                                                   response_mode="query")
        except requests.exceptions.RequestException as exc:
            raise self._unreachable(exc) from None

    def finish_connect(self, flow: dict, callback_args: dict, scopes: list[str] | None = None) -> Connected:
        """Redeem the code; checks state, nonce, PKCE, and the ID token's signature against the JWKS."""
        cache = msal.SerializableTokenCache()
        app = self._app(cache)
        try:
            result = app.acquire_token_by_auth_code_flow(flow, callback_args, scopes=scopes or CONNECT_SCOPES)
        except ValueError:  # msal: state mismatch / missing
            raise IdentityError(Explained(STATE_MISMATCH)) from None
        except requests.exceptions.RequestException as exc:
            raise self._unreachable(exc) from None
        if "error" in result:
            raise self._explain(result)
        claims = self.verify_id_token(result.get("id_token", ""), flow.get("nonce"))
        username = (claims.get("preferred_username") or claims.get("email") or claims.get("upn") or "").lower()
        if not username:
            raise IdentityError(Explained("Microsoft did not say which account signed in (no preferred_username in "
                                          "the ID token): add the 'email' and 'profile' permissions, then reconnect."))
        tenant_id, object_id = str(claims.get("tid") or ""), str(claims.get("oid") or "")
        if not tenant_id or not object_id:
            raise IdentityError(Explained("Microsoft did not say who signed in (no tid and oid in the ID token), so "
                                          "the mailbox cannot be tied to its owner: add the 'profile' permission "
                                          "to the app in Azure, then connect again."))
        info = result.get("id_token_claims") or {}
        accounts = app.get_accounts()
        home = accounts[0]["home_account_id"] if accounts else ""
        return Connected(username=username, display_name=claims.get("name", "") or info.get("name", ""),
                         tenant_id=tenant_id, object_id=object_id, home_account_id=home,
                         token_cache=cache.serialize())

    def mail_token(self, token_cache: str, home_account_id: str = "", *,
                   force_refresh: bool = False) -> tuple[str, str | None]:
        """An access token for IMAP/SMTP (see `access_token`)."""
        return self.access_token(token_cache, home_account_id, MAIL_SCOPES, force_refresh=force_refresh)

    def access_token(self, token_cache: str, home_account_id: str, scopes: list[str], *,
                     force_refresh: bool = False) -> tuple[str, str | None]:
        """An access token for `scopes` (one resource), refreshed if needed.

        Returns (access_token, new_cache): new_cache is the serialized cache when it changed (a
        rotated refresh token) and must be saved at once, else None.
        """
        cache = msal.SerializableTokenCache()
        if token_cache:
            cache.deserialize(token_cache)
        app = self._app(cache)
        accounts = app.get_accounts()
        if home_account_id:
            accounts = [a for a in accounts if a.get("home_account_id") == home_account_id] or accounts
        if not accounts:
            raise IdentityError(Explained("No sign-in is stored for this mailbox: reconnect it.", None, True))
        try:
            result = app.acquire_token_silent_with_error(scopes, account=accounts[0],
                                                         force_refresh=force_refresh)
        except requests.exceptions.RequestException as exc:
            raise self._unreachable(exc) from None
        if not result:
            raise IdentityError(Explained("The stored sign-in has no refresh token: reconnect the mailbox.", None,
                                          True))
        if "error" in result:
            raise self._explain(result)
        new_cache = cache.serialize() if cache.has_state_changed else None
        return result["access_token"], new_cache

