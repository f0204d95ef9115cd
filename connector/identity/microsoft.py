"""Microsoft identity platform v2.0 through msal: registration check, connect flow, silent refresh.

Everything reaches the authority through `authority_host` and the configured CA bundle, so national
clouds and the test identity provider are a configuration change, not a code path.
"""
from __future__ import annotations

import hashlib
import logging
import warnings
from dataclasses import dataclass
from urllib.parse import urlencode

import msal
import requests
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from .errors import Context, Explained, explain

log = logging.getLogger(__name__)

IMAP_SCOPE = "https://outlook.office.com/IMAP.AccessAsUser.All"
SMTP_SCOPE = "https://outlook.office.com/SMTP.Send"
MAIL_SCOPES = [IMAP_SCOPE, SMTP_SCOPE]
GRAPH_SCOPES = ["https://graph.microsoft.com/Mail.ReadWrite", "https://graph.microsoft.com/Mail.Send"]
# msal adds offline_access, openid and profile itself; "email" we ask for explicitly.
CONNECT_SCOPES = MAIL_SCOPES + ["email"]
GENERIC_TENANTS = {"common", "organizations", "consumers"}
HTTP_TIMEOUT = 20


STATE_MISMATCH = ("This sign-in answer does not belong to a sign-in started here (the state does not match): it "
                  "was used already, or it was forged. Start again with \"Connect Microsoft 365\".")


class IdentityError(Exception):
    """A failure with a sentence for people (`explained.message`); never carries a token."""

    def __init__(self, explained: Explained) -> None:
        super().__init__(explained.message)
        self.explained = explained

    @property
    def needs_reconnect(self) -> bool:
        return self.explained.needs_reconnect


@dataclass(frozen=True)
class Registration:
    client_id: str
    tenant: str
    client_secret: str


@dataclass(frozen=True)
class Connected:
    """What a completed sign-in gives us for one mailbox.

    Who signed in is `tenant_id` + `object_id` (the ID token's `tid` and `oid`), which Microsoft never
    reassigns; `username` (preferred_username) names the mailbox but can change hands.
    """
    username: str  # the signed-in user (preferred_username)
    display_name: str
    tenant_id: str
    object_id: str
    home_account_id: str
    token_cache: str  # serialized msal cache, to be encrypted by the caller


def http_session(ca_bundle: str | None) -> requests.Session:
    """A requests session that verifies against the configured CA, ignoring REQUESTS_CA_BUNDLE."""
    session = requests.Session()
    session.trust_env = False
    session.verify = ca_bundle or True
    return session


class MicrosoftIdentity:
    """One app registration at one authority."""

    def __init__(self, registration: Registration, authority_host: str, ca_bundle: str | None = None,
                 callback_url: str = "") -> None:
        self.registration = registration
        self.authority_host = authority_host.rstrip("/")
        self.ca_bundle = ca_bundle
        self.callback_url = callback_url
        self._http = http_session(ca_bundle)

    # -- helpers ---------------------------------------------------------------------------
    @property
    def authority(self) -> str:
        return f"{self.authority_host}/{self.registration.tenant}"

    def context(self, address: str = "") -> Context:
        tenant = self.registration.tenant
        consent = ""
        if tenant and tenant not in GENERIC_TENANTS:
            consent = (f"{self.authority_host}/{tenant}/v2.0/adminconsent?"
                       + urlencode({"client_id": self.registration.client_id,
                                    "scope": " ".join(MAIL_SCOPES), "redirect_uri": self.callback_url}))
        return Context(tenant=tenant, client_id=self.registration.client_id, callback_url=self.callback_url,
                       authority_host=self.authority_host, address=address, admin_consent_url=consent)

    def _explain(self, payload: dict, address: str = "") -> IdentityError:
        return IdentityError(explain(payload.get("error"), payload.get("error_description"), self.context(address)))

    def _unreachable(self, exc: Exception) -> IdentityError:
        reason = type(exc).__name__
        if isinstance(exc, requests.exceptions.SSLError):
            fix = ("the TLS certificate could not be verified: set [tls] ca_bundle to the CA that signed it, "
                   "or check authority_host")
        else:
            fix = "check [microsoft] authority_host, DNS, the proxy and the firewall"
        return IdentityError(Explained(f"The sign-in service at {self.authority_host} cannot be reached ({reason}): "
                                       f"{fix}."))

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

    def _discovery_error(self, exc: Exception) -> IdentityError:
        text = str(exc)
        if "AADSTS" in text:
            return IdentityError(explain("invalid_request", text, self.context()))
        return IdentityError(explain("invalid_request", "AADSTS90002", self.context()))

    # -- registration check ------------------------------------------------------------------
    def discover(self) -> dict:
        """The authority's OpenID metadata; proves tenant and authority are right."""
        url = f"{self.authority}/v2.0/.well-known/openid-configuration"
        try:
            response = self._http.get(url, timeout=HTTP_TIMEOUT)
        except requests.exceptions.RequestException as exc:
            raise self._unreachable(exc) from None
        not_metadata = IdentityError(Explained(
            f"{self.authority_host} did not answer like a Microsoft sign-in service (HTTP {response.status_code} "
            "without OpenID metadata): check [microsoft] authority_host."))
        try:
            payload = response.json()
        except ValueError:
            raise not_metadata from None
        if not isinstance(payload, dict):
            raise not_metadata
        if response.status_code != 200 or "error" in payload:
            if "error" not in payload:
                payload = {"error": "server_error"} if response.status_code >= 500 else \
                    {"error": "invalid_request", "error_description": "AADSTS90002"}
            raise self._explain(payload)
        if not {"authorization_endpoint", "token_endpoint", "jwks_uri", "issuer"} <= payload.keys():
            raise not_metadata
        return payload

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
    def start_connect(self, redirect_uri: str, login_hint: str | None = None) -> dict:
        """Begin the authorization-code flow (PKCE, state, nonce); keep the returned dict until the callback."""
        app = self._app()
        try:
            with warnings.catch_warnings():
                # msal recommends form_post; a cross-site POST would not carry our SameSite=Lax session
                # cookie, so the callback comes as a query (state, nonce and PKCE protect it).
                warnings.filterwarnings("ignore", message="response_mode='form_post'")
                return app.initiate_auth_code_flow(CONNECT_SCOPES, redirect_uri=redirect_uri,
                                                   prompt="select_account", login_hint=login_hint or None,
                                                   response_mode="query")
        except requests.exceptions.RequestException as exc:
            raise self._unreachable(exc) from None

    def finish_connect(self, flow: dict, callback_args: dict) -> Connected:
        """Redeem the code; checks state, nonce, PKCE, and the ID token's signature against the JWKS."""
        cache = msal.SerializableTokenCache()
        app = self._app(cache)
        try:
            result = app.acquire_token_by_auth_code_flow(flow, callback_args, scopes=CONNECT_SCOPES)
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

    def verify_id_token(self, id_token: str, nonce: str | None) -> dict:
        """Check the ID token's signature, issuer, audience, lifetime and nonce."""
        metadata = self.discover()
        try:
            keys = self._http.get(metadata["jwks_uri"], timeout=HTTP_TIMEOUT).json()
        except (requests.exceptions.RequestException, ValueError, KeyError) as exc:
            raise self._unreachable(exc) from None
        try:
            claims = jwt.decode(id_token, KeySet.import_key_set(keys), algorithms=["RS256"]).claims
            issuer = metadata.get("issuer", "").replace("{tenantid}", str(claims.get("tid", "")))
            jwt.JWTClaimsRegistry(leeway=120, iss={"essential": True, "value": issuer},
                                  aud={"essential": True, "value": self.registration.client_id},
                                  exp={"essential": True}).validate(claims)
        except (JoseError, ValueError, TypeError) as exc:
            log.warning("ID token rejected: %s", type(exc).__name__)
            raise IdentityError(Explained("Microsoft's answer could not be verified (the ID token's signature, "
                                          "issuer or audience is wrong): start again; if it persists, check "
                                          "authority_host and the Client ID.")) from None
        # msal sends sha256(nonce) in the request, so that is what the ID token carries
        if nonce and claims.get("nonce") != hashlib.sha256(nonce.encode("ascii")).hexdigest():
            raise IdentityError(Explained("Microsoft's answer does not match this sign-in (nonce): start again with "
                                          "\"Connect Microsoft 365\"."))
        return dict(claims)

    # -- tokens for IMAP/SMTP -----------------------------------------------------------------------
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

