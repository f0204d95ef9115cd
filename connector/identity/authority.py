"""What the Microsoft identity platform says, read without msal: OpenID metadata (which proves tenant and
authority), ID token verification against its keys, and its errors explained for people.

`MicrosoftIdentity` (microsoft.py) builds on this for the app's flows and tokens.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from urllib.parse import urlencode

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
GENERIC_TENANTS = {"common", "organizations", "consumers"}
HTTP_TIMEOUT = 20


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


class AuthorityClient:
    """One app registration at one authority: its metadata, its ID tokens and its errors."""

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
