"""Google (Gmail and Google Workspace) as an OpenID provider: the OAuth client check, what a finished
sign-in must contain, and access tokens for IMAP/SMTP (XOAUTH2) from a mailbox's stored tokens.

Everything is found through `<authority>/.well-known/openid-configuration` and reached with the
configured CA bundle (never REQUESTS_CA_BUNDLE), so the test stand-in is a configuration change. The
browser leg of a connect runs through authlib's Flask client in connector/web/google_connect.py,
built from `GoogleIdentity.oauth_client_settings()`; this module imports no web code, so the worker
uses it too:

    identity = google_registration.identity(session, settings, vault)   # None: no Google app
    access_token, new_json = identity.mail_token(token_json)             # raises IdentityError
    if new_json is not None: store it (encrypted) before using the token

A mailbox's tokens are a JSON object (`GoogleTokens`), encrypted per mailbox in
`Account.token_cache_enc`.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import requests
from authlib.integrations.requests_client import OAuth2Session, OAuthError

from .errors import Explained
from .google_errors import GoogleContext, explain_google, refresh_refused
from .microsoft import IdentityError, http_session

log = logging.getLogger(__name__)

MAIL_SCOPE = "https://mail.google.com/"
CONNECT_SCOPES = ("openid", "email", MAIL_SCOPE)
HTTP_TIMEOUT = 20
REFRESH_MARGIN_SECONDS = 300  # an access token with less left is refreshed before use
DAY = 86400.0
METADATA_TTL_SECONDS = 3600.0
# The code of the registration check: any value that is no authorization code of this client.
CHECK_CODE = "connector-registration-check"

DECLINED_GMAIL = ("You did not tick \"Read, compose, send, and permanently delete all your email from Gmail\" on "
                  "Google's consent screen, so connector could not read the mailbox over IMAP and nothing was "
                  "connected: click \"Connect Google\" again and tick it.")
NO_REFRESH_TOKEN = ("Google sent no refresh token, so connector would lose the mailbox within the hour, and nothing "
                    "was connected: remove the app's access in the Google Account (Security > Your connections to "
                    "third-party apps & services), then click \"Connect Google\" again.")
NO_ID_TOKEN = ("Google did not say who signed in (no ID token in its answer), so nothing was connected: click "
               "\"Connect Google\" again; if it persists, check [google] authority.")
UNVERIFIED_EMAIL = ("Google says the address {email} of this account is not verified, so it cannot name a "
                    "mailbox and nothing was connected: verify it in the Google Account, or sign in with a Gmail "
                    "or Google Workspace address.")
UNREADABLE_TOKENS = ("The mailbox's stored Google sign-in cannot be read (it was written by another version or "
                     "damaged): reconnect the mailbox.")


@dataclass(frozen=True)
class GoogleApp:
    """The OAuth client (type "Web application") from the Google Cloud console's Credentials page."""
    client_id: str
    client_secret: str


@dataclass(frozen=True)
class GoogleTokens:
    """What is stored per mailbox. Times are Unix seconds.

    `issued_at` is when the refresh token came (the sign-in), `refreshed_at` the last refresh Google
    accepted: together they tell a token that died at 7 days (an app in Testing) from a revoked one.
    """
    refresh_token: str
    access_token: str
    expires_at: float
    scope: str
    issued_at: float
    refreshed_at: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "GoogleTokens":
        """Raises ValueError for anything that is not a complete token JSON."""
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("refresh_token"), str) or not data["refresh_token"]:
            raise ValueError("no refresh token")
        refreshed = data.get("refreshed_at")
        return cls(refresh_token=data["refresh_token"], access_token=str(data.get("access_token") or ""),
                   expires_at=float(data.get("expires_at") or 0), scope=str(data.get("scope") or ""),
                   issued_at=float(data.get("issued_at") or 0),
                   refreshed_at=float(refreshed) if refreshed is not None else None)


@dataclass(frozen=True)
class GoogleSignIn:
    """A finished, verified sign-in. `subject` (the ID token's `sub`) is the Google Account for good;
    the address can be renamed or reused, `hosted_domain` is the Workspace domain (`hd`, empty for
    a consumer account)."""
    email: str
    subject: str
    hosted_domain: str
    name: str
    tokens: GoogleTokens


class GoogleTokenError(IdentityError):
    """A refused token request; `error` is Google's code, `reason` ours (see google_errors.refresh_refused)."""

    def __init__(self, explained: Explained, error: str = "", reason: str = "transient") -> None:
        super().__init__(explained)
        self.error = error
        self.reason = reason


_metadata_cache: dict[tuple[str, str | None], tuple[float, dict]] = {}
_metadata_lock = threading.Lock()


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
        return f"{self.authority}/.well-known/openid-configuration"

    def context(self, hosted_domain: str = "") -> GoogleContext:
        return GoogleContext(client_id=self.app.client_id, callback_url=self.callback_url, authority=self.authority,
                             hosted_domain=hosted_domain or self.hosted_domain)

    def _unreachable(self, exc: Exception) -> IdentityError:
        if isinstance(exc, requests.exceptions.SSLError):
            fix = ("its TLS certificate could not be verified: set [tls] ca_bundle to the CA that signed it, or "
                   "check [google] authority")
        else:
            fix = "check [google] authority, DNS, the proxy and the firewall"
        return IdentityError(Explained(f"Google's sign-in service at {self.authority} cannot be reached "
                                       f"({type(exc).__name__}): {fix}."))

    def _session(self) -> OAuth2Session:
        session = OAuth2Session(self.app.client_id, self.app.client_secret, default_timeout=HTTP_TIMEOUT)
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override `verify` otherwise
        session.verify = self.ca_bundle or True
        return session

    # -- discovery -------------------------------------------------------------------------------------
    def metadata(self, *, fresh: bool = False) -> dict:
        """The discovery document, checked; kept an hour per authority (the worker refreshes often)."""
        key = (self.metadata_url, self.ca_bundle)
        with _metadata_lock:
            cached = _metadata_cache.get(key)
        if cached and not fresh and time.monotonic() - cached[0] < METADATA_TTL_SECONDS:
            return cached[1]
        document = self._discover()
        with _metadata_lock:
            _metadata_cache[key] = (time.monotonic(), document)
        return document

    def _discover(self) -> dict:
        http = http_session(self.ca_bundle)
        try:
            response = http.get(self.metadata_url, timeout=HTTP_TIMEOUT)
        except requests.exceptions.RequestException as exc:
            raise self._unreachable(exc) from None
        finally:
            http.close()
        not_metadata = IdentityError(Explained(
            f"{self.authority} did not answer like Google's sign-in service (HTTP {response.status_code} at "
            f"{self.metadata_url} without OpenID metadata): check [google] authority "
            "(https://accounts.google.com)."))
        try:
            document = response.json()
        except ValueError:
            raise not_metadata from None
        needed = {"issuer", "authorization_endpoint", "token_endpoint", "jwks_uri"}
        if response.status_code != 200 or not isinstance(document, dict) or not needed <= document.keys():
            raise not_metadata
        if str(document["issuer"]).rstrip("/") != self.authority:
            raise IdentityError(Explained(
                f"The sign-in service at {self.authority} says its issuer is {document['issuer']}: set [google] "
                f"authority to {document['issuer']}."))
        if not all(str(document[k]).startswith("https://") for k in needed - {"issuer"}):
            raise not_metadata
        return document

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

    # -- a finished sign-in ---------------------------------------------------------------------------------
    def signed_in(self, token: dict, *, now: float | None = None) -> GoogleSignIn:
        """The mailbox a verified token response stands for (`token["userinfo"]`: the ID token's
        claims, verified by authlib). Raises IdentityError with the sentence for a person."""
        claims = token.get("userinfo")
        if not isinstance(claims, dict) or not claims.get("sub"):
            raise IdentityError(Explained(NO_ID_TOKEN))
        granted = str(token.get("scope", "")).split()
        if "scope" in token and MAIL_SCOPE not in granted:
            raise IdentityError(Explained(DECLINED_GMAIL))
        email = str(claims.get("email") or "").strip().lower()
        if not email:
            raise IdentityError(Explained("Google did not say which address signed in (no email in the ID token), "
                                          "so nothing was connected: check that the app asks for the \"email\" "
                                          "scope, then click \"Connect Google\" again."))
        if claims.get("email_verified") not in (True, "true"):
            raise IdentityError(Explained(UNVERIFIED_EMAIL.format(email=email)))
        refresh_token = token.get("refresh_token")
        if not refresh_token:
            raise IdentityError(Explained(NO_REFRESH_TOKEN))
        now = time.time() if now is None else now
        tokens = GoogleTokens(refresh_token=str(refresh_token), access_token=str(token.get("access_token") or ""),
                              expires_at=now + _seconds(token.get("expires_in")), scope=" ".join(granted),
                              issued_at=now)
        return GoogleSignIn(email=email, subject=str(claims["sub"]), hosted_domain=str(claims.get("hd") or ""),
                            name=str(claims.get("name") or ""), tokens=tokens)

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
        access_token = answer.get("access_token")
        if not access_token:
            raise GoogleTokenError(Explained("Google answered the token refresh without an access token: try "
                                             "again later."))
        scope = str(answer.get("scope") or tokens.scope)
        if MAIL_SCOPE not in scope.split():
            raise GoogleTokenError(Explained("Google no longer grants Gmail access (https://mail.google.com/) to "
                                             "this mailbox's sign-in: reconnect it and tick the Gmail permission.",
                                             None, True), reason="scope")
        new_refresh = answer.get("refresh_token") or tokens.refresh_token
        rotated = new_refresh != tokens.refresh_token  # Google keeps refresh tokens; keep a new one if it comes
        return replace(tokens, refresh_token=str(new_refresh), access_token=str(access_token),
                       expires_at=now + _seconds(answer.get("expires_in")), scope=scope,
                       issued_at=now if rotated else tokens.issued_at, refreshed_at=now)

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
        """End the grant at Google (the refresh token, and with it every access token of it).

        Raises IdentityError when Google cannot be reached or refuses; a token Google no longer knows
        (`invalid_token`) counts as revoked.
        """
        try:
            tokens = GoogleTokens.from_json(token_json)
        except (ValueError, TypeError):
            return
        endpoint = self.metadata().get("revocation_endpoint")
        if not endpoint:
            raise IdentityError(Explained(f"{self.authority} names no revocation endpoint."))
        http = http_session(self.ca_bundle)
        try:
            response = http.post(endpoint, data={"token": tokens.refresh_token}, timeout=HTTP_TIMEOUT)
        except requests.exceptions.RequestException as exc:
            raise self._unreachable(exc) from None
        finally:
            http.close()
        if response.status_code == 200:
            return
        try:
            error = response.json().get("error", "")
        except (ValueError, AttributeError):
            error = ""
        if error in {"invalid_token", "invalid_grant"}:
            return
        raise IdentityError(explain_google(error or f"HTTP {response.status_code}", None, self.context()))


def _seconds(value: Any) -> float:
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return 0.0
