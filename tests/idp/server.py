"""The test identity provider: directory state, the Python control API, and the HTTPS server.

It stands in for login.microsoftonline.com (v2.0 endpoints) so the app's real msal code meets it
only through configuration (authority host + CA bundle). Protocol handling lives in
`authorize.py` (browser leg) and `grants.py` (token endpoint); HTTP routing in `routes.py`.
"""
from __future__ import annotations

import collections
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from . import scopes as scope_rules
from .model import AUDIENCES, MSA_TENANT_ID, App, Audience, Tenant, User, new_guid
from .tokens import Signer

log = logging.getLogger(__name__)

IMAP_SMTP_SCOPES = ("imap.accessasuser.all", "smtp.send", "pop.accessasuser.all")
CODE_PREFIX = "1.AQ"  # opaque, Microsoft-looking; lets us tell "ours but unknown" from garbage
REFRESH_PREFIX = "1.AR"
REFRESH_TOKEN_IDLE_LIMIT = 90 * 86400


@dataclass(frozen=True)
class Route:
    """What the tenant path segment of a request means."""

    segment: str
    kind: str  # "tenant" | "common" | "organizations" | "consumers"
    tenant: Tenant | None = None


@dataclass(eq=False)
class CodeGrant:
    code: str
    app: App
    user: User
    scopes: list[str]
    redirect_uri: str
    nonce: str | None
    code_challenge: str
    issued: float
    auth_time: int | None
    used: bool = False


@dataclass(eq=False)
class RefreshGrant:
    token: str
    app: App
    user: User
    scopes: list[str]
    issued: float
    last_used: float
    used: bool = False
    revoked_code: int | None = None


@dataclass(eq=False)
class IssuedAccessToken:
    uti: str
    email: str | None  # None for app-only tokens
    client_id: str
    exp: int
    active: bool = True


@dataclass(eq=False)
class PendingAuth:
    """An /authorize request between the sign-in and consent pages (key: hidden field `rid`)."""

    rid: str
    route: Route
    app: App
    redirect_uri: str
    response_mode: str
    state: str | None
    nonce: str | None
    scopes: list[str]
    code_challenge: str
    want_client_info: bool
    prompt: str
    login_hint: str
    max_age: int | None
    created: float = field(default_factory=time.time)
    user: User | None = None


class _QuietHandler(WSGIRequestHandler):
    """No access log (URLs carry codes and state); TLS noise from port probes at debug level."""

    timeout = 30

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def log_error(self, format: str, *args: Any) -> None:
        if format.startswith("SSL error"):
            log.debug(format, *args)
        else:
            super().log_error(format, *args)


class IdentityProvider:
    """A local Microsoft identity platform (v2.0) for tests and benchmarks."""

    def __init__(self, ca: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.ca = ca
        self.host = host
        self.port = port
        self.access_token_lifetime = 3600
        self.code_lifetime = 600
        # Refresh tokens are single-use: each refresh returns a new one and the one redeemed is refused from
        # then on (AADSTS70000), so a client that loses a rotated token fails at its next refresh instead of
        # years later. Microsoft itself keeps old refresh tokens valid until they expire; False gives that.
        self.strict_rotation = True
        self.token_calls: collections.Counter[tuple[str, str]] = collections.Counter()
        self.token_calls_total = 0
        self.signer = Signer()
        self.lock = threading.RLock()
        self.tenants: dict[str, Tenant] = {}  # by tenant id and by each domain (lower-case)
        self.apps: dict[str, App] = {}
        self.users: dict[str, User] = {}  # by lower-case email
        self.consumers = Tenant(MSA_TENANT_ID, "consumers.test", personal=True)
        self.tenants[MSA_TENANT_ID] = self.consumers
        # Consent: (user oid, client id) / (tenant id, client id) -> {scope key: scope as asked}
        self.consents: dict[tuple[str, str], dict[str, str]] = {}
        self.admin_consents: dict[tuple[str, str], dict[str, str]] = {}
        self.pending: dict[str, PendingAuth] = {}
        self.codes: dict[str, CodeGrant] = {}
        self.refresh_tokens: dict[str, RefreshGrant] = {}
        self.access_tokens: dict[str, IssuedAccessToken] = {}
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The authority host, e.g. https://127.0.0.1:54321 (no trailing slash)."""
        if self._url is None:
            raise RuntimeError("IdentityProvider is not started")
        return self._url

    def start(self) -> "IdentityProvider":
        from .routes import build_app

        context = self.ca.server_context("idp")
        server = make_server(self.host, self.port, build_app(self), threaded=True,
                             request_handler=_QuietHandler)
        # TLS handshake in the request thread, not in the accept loop: a stalled client (or a
        # port probe) must not block everyone else.
        server.socket = context.wrap_socket(server.socket, server_side=True,
                                            do_handshake_on_connect=False)
        server.ssl_context = context
        self._server = server
        self.port = server.server_port
        self._url = f"https://{self.host}:{self.port}"
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="test-idp", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "IdentityProvider":
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- directory ---------------------------------------------------------------------------

    def add_tenant(self, domain: str, tenant_id: str | None = None, *,
                   personal: bool = False) -> Tenant:
        """An Entra ID tenant; `personal=True` adds `domain` to the consumers (MSA) directory."""
        with self.lock:
            if personal:
                self.consumers.domains.add(domain.lower())
                self.tenants[domain.lower()] = self.consumers
                return self.consumers
            tenant = Tenant(tenant_id or new_guid(), domain)
            self.tenants[tenant.tenant_id.lower()] = tenant
            self.tenants[domain.lower()] = tenant
            return tenant

    def add_app(self, tenant: Tenant | str, client_id: str | None = None,
                secret: str | None = "s3cret", redirect_uris: list[str] | None = None,
                audience: Audience = "single", secret_expired: bool = False,
                name: str = "Helpdesk connector", permissions: list[str] | None = None) -> App:
        """An app registration (web platform, client secret) homed in `tenant`."""
        if audience not in AUDIENCES:
            raise ValueError(f"audience must be one of {AUDIENCES}")
        with self.lock:
            app = App(client_id or new_guid(), self._tenant(tenant), secret,
                      list(redirect_uris or []), audience, secret_expired, name)
            if permissions is not None:
                app.permissions = list(permissions)
            self.apps[app.client_id] = app
            return app

    def add_user(self, tenant: Tenant | str, email: str, password: str = "pw",
                 name: str | None = None, needs_admin_consent: bool = False) -> User:
        """A user who can sign in with `email`/`password`."""
        with self.lock:
            user = User(email, password, name or email.split("@")[0].title(), self._tenant(tenant),
                        needs_admin_consent=needs_admin_consent)
            self.users[email.lower()] = user
            return user

    def grant_mailbox_access(self, user: User | str, mailbox: str) -> None:
        """Full Access (Add-MailboxPermission -AccessRights FullAccess): `user`'s tokens may sign in
        as `mailbox` (IMAP and SMTP `user=`). It does not include Send As, as at Exchange."""
        with self.lock:
            self._user(user).mailboxes.add(mailbox.lower())

    def remove_mailbox_access(self, user: User | str, mailbox: str) -> None:
        """Remove-MailboxPermission: the next sign-in as `mailbox` with `user`'s token fails."""
        with self.lock:
            self._user(user).mailboxes.discard(mailbox.lower())

    def grant_send_as(self, user: User | str, mailbox: str) -> None:
        """Add-RecipientPermission -AccessRights SendAs: mail from `mailbox` submitted with `user`'s
        token is accepted (without it Exchange answers 554 5.2.0 SendAsDenied after DATA)."""
        with self.lock:
            self._user(user).send_as.add(mailbox.lower())

    def grant_admin_consent(self, tenant: Tenant | str, app: App | str) -> None:
        """An admin consented for the whole tenant (what /adminconsent records)."""
        with self.lock:
            app = app if isinstance(app, App) else self.apps[app]
            scopes = list(app.permissions) + list(scope_rules.OIDC_SCOPES)
            self.admin_consents.setdefault((self._tenant(tenant).tenant_id, app.client_id),
                                           {}).update((scope_rules.key(s), s) for s in scopes)

    def revoke(self, user: User | str, code: int = 50173) -> None:
        """The user's refresh tokens now fail with invalid_grant AADSTS<code>; their access
        tokens turn inactive at /introspect. A fresh sign-in works again."""
        with self.lock:
            email = self._user(user).email.lower()
            for grant in self.refresh_tokens.values():
                if grant.user.email.lower() == email:
                    grant.revoked_code = code
            for issued in self.access_tokens.values():
                if issued.email and issued.email.lower() == email:
                    issued.active = False

    def live_refresh_tokens(self, user: User | str) -> list[str]:
        """The user's refresh tokens that still work: neither redeemed (under strict rotation) nor revoked."""
        with self.lock:
            email = self._user(user).email.lower()
            return [grant.token for grant in self.refresh_tokens.values()
                    if grant.user.email.lower() == email and grant.revoked_code is None
                    and not (self.strict_rotation and grant.used)]

    def expire_access_tokens(self, email: str | None = None) -> None:
        """Issued access tokens (all, or one user's) become inactive at /introspect."""
        with self.lock:
            for issued in self.access_tokens.values():
                if email is None or (issued.email or "").lower() == email.lower():
                    issued.active = False

    def reset_stats(self) -> None:
        with self.lock:
            self.token_calls.clear()
            self.token_calls_total = 0

    # ---- lookups -----------------------------------------------------------------------------

    def _tenant(self, tenant: Tenant | str) -> Tenant:
        if isinstance(tenant, Tenant):
            return tenant
        try:
            return self.tenants[tenant.lower()]
        except KeyError:
            raise KeyError(f"unknown tenant {tenant!r}") from None

    def _user(self, user: User | str) -> User:
        if isinstance(user, User):
            return user
        try:
            return self.users[user.lower()]
        except KeyError:
            raise KeyError(f"unknown user {user!r}") from None

    def resolve(self, segment: str) -> Route | None:
        """The tenant path segment: GUID, domain, common, organizations or consumers."""
        name = segment.lower()
        if name in ("common", "organizations", "consumers"):
            return Route(segment, name, self.consumers if name == "consumers" else None)
        tenant = self.tenants.get(name)
        if tenant is None:
            return None
        return Route(segment, "consumers" if tenant.personal else "tenant", tenant)

    def granted(self, user: User, app: App) -> dict[str, str]:
        """Scopes the user (or their admin) consented to for this app, by scope key."""
        return {**self.admin_consents.get((user.tenant.tenant_id, app.client_id), {}),
                **self.consents.get((user.oid, app.client_id), {})}

    def issuer(self, tenant_id: str) -> str:
        return f"{self.url}/{tenant_id}/v2.0"

    def new_code(self) -> str:
        return CODE_PREFIX + secrets.token_urlsafe(600)

    def new_refresh_token(self) -> str:
        return REFRESH_PREFIX + secrets.token_urlsafe(700)

    # ---- introspection (for Dovecot's passdb oauth2 and the test SMTP server) ----------------

    def introspect(self, token: str, user: str | None = None, scope: str | None = None) -> dict:
        """RFC 7662-style answer: active only for a valid, unrevoked Outlook token with IMAP/SMTP
        scope whose owner is `user` or has Full Access to mailbox `user` (checked now, so removing
        the permission bites at the next sign-in). `scope` (space separated) requires those scopes
        instead of "any of IMAP/SMTP/POP"."""
        inactive = {"active": False}
        try:
            claims = self.signer.verify(token)
        except (jwt.InvalidTokenError, ValueError):
            return inactive
        with self.lock:
            issued = self.access_tokens.get(claims.get("uti", ""))
            if issued is None or not issued.active or claims.get("idtyp") != "user":
                return inactive
            if claims.get("aud") != scope_rules.OUTLOOK:
                return inactive
            granted = {s.lower() for s in claims.get("scp", "").split()}
            required = {s.lower() for s in (scope or "").replace(",", " ").split()}
            if required and not required <= granted:
                return inactive
            if not required and not granted & set(IMAP_SMTP_SCOPES):
                return inactive
            owner = self.users.get(claims.get("upn", "").lower())
            if owner is None or owner.oid != claims.get("oid"):
                return inactive
            login = user if user else owner.email
            if login.lower() != owner.email.lower() and login.lower() not in owner.mailboxes:
                return inactive
            senders = " ".join([owner.email.lower(), *sorted(owner.send_as)])
        # send_as (a space-separated string, so Dovecot's JSON reader keeps it) is for the test SMTP
        # server: the addresses this token may put in MAIL FROM and From:.
        return {"active": True, "username": login, "scope": claims["scp"], "exp": claims["exp"],
                "client_id": claims.get("appid"), "sub": claims.get("oid"), "upn": owner.email,
                "send_as": senders, "token_type": "Bearer"}

