"""GoogleProvider: lifecycle, the token controls of the Python control API, and the request log.

One HTTPS host (a werkzeug server in a thread, certificate from the test CA) serves what Google
spreads over accounts.google.com, oauth2.googleapis.com, openidconnect.googleapis.com and
www.googleapis.com; the discovery document names every endpoint, so a client that follows
discovery (authlib does) needs only the issuer URL. Routing lives in routes.py, the browser leg
in authorize.py and consent.py, the token endpoint in grants.py.
"""
from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from .directory import Directory
from .store import DAY, TokenStore
from .tokens import Signer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestRecord:
    """One request as the stand-in saw it; never a token, code or secret."""

    time: float
    method: str
    path: str
    endpoint: str  # discovery, jwks, authorize, signin, chooser, warning, consent, token,
    #                revoke, tokeninfo, userinfo
    status: int
    client_id: str | None = None
    grant_type: str | None = None
    auth_method: str | None = None  # client_secret_basic / client_secret_post
    error: str | None = None  # `error` of a JSON error, or the code of an error page


class _QuietHandler(WSGIRequestHandler):
    """No access log (URLs carry codes and tokens); TLS noise from port probes at debug."""

    timeout = 30

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def log_error(self, format: str, *args: Any) -> None:
        if format.startswith("SSL error"):
            log.debug(format, *args)
        else:
            super().log_error(format, *args)


class GoogleProvider(Directory):
    """A local, Google-like OpenID provider (see tests/google/__init__.py for the guide)."""

    def __init__(self, ca: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__()
        self.ca = ca
        self.host = host
        self.port = port
        self.code_lifetime = 600  # Google's codes are short-lived; the exact figure is not published
        self.signer = Signer()
        self.store = TokenStore()
        self.requests: list[RequestRecord] = []
        self.pending: dict[str, Any] = {}  # authorize.Pending by rid, under directory_lock
        self._log_lock = threading.Lock()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    # ---- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The issuer, e.g. https://127.0.0.1:54321 (what `[google] authority` points at)."""
        if self._url is None:
            raise RuntimeError("GoogleProvider is not started")
        return self._url

    @property
    def issuer(self) -> str:
        return self.url

    def start(self) -> "GoogleProvider":
        from .routes import build_app

        context = self.ca.server_context("google")
        server = make_server(self.host, self.port, build_app(self), threaded=True,
                             request_handler=_QuietHandler)
        server.socket = context.wrap_socket(server.socket, server_side=True,
                                            do_handshake_on_connect=False)
        server.ssl_context = context
        self._server = server
        self.port = server.server_port
        self._url = f"https://{self.host}:{self.port}"
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="google-standin", daemon=True)
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

    def __enter__(self) -> "GoogleProvider":
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- token controls ------------------------------------------------------------------

    def revoke(self, email: str, client_id: str | None = None) -> int:
        """The user removes the app's access in their Google Account (all apps if no client):
        its tokens die and the next sign-in asks for consent again. Returns tokens killed."""
        user = self.user(email)
        clients = [self.client(client_id)] if client_id else list(self.clients.values())
        return sum(self.store.revoke_grant(user, client) for client in clients)

    def change_password(self, email: str, new_password: str | None = None) -> str:
        """Refresh and access tokens with Gmail scopes die, the user's browser sessions end.
        Returns the new password."""
        user = self.user(email)
        user.password = new_password or "pw-" + secrets.token_urlsafe(8)
        self.store.password_changed(user)
        self.sign_out_everywhere(user)
        return user.password

    def age_refresh_tokens(self, days: float, email: str | None = None,
                           client_id: str | None = None) -> int:
        """Let `days` pass for refresh tokens (7 kills a Testing app's, 183 of disuse any)."""
        return self.store.age(days * DAY, self.user(email) if email else None,
                              self.client(client_id) if client_id else None)

    def expire_access_tokens(self, email: str | None = None) -> None:
        """Issued access tokens (all, or one user's) reach their expiry now."""
        self.store.expire_access(self.user(email) if email else None)

    def rotate_signing_key(self) -> str:
        """New ID tokens are signed with a new key; both are in the JWKS. Returns the new kid."""
        return self.signer.rotate()

    # ---- request log ---------------------------------------------------------------------

    def record(self, entry: RequestRecord) -> None:
        with self._log_lock:
            self.requests.append(entry)

    def calls(self, endpoint: str | None = None, **match: Any) -> list[RequestRecord]:
        """Logged requests to `endpoint` whose fields equal `match` (e.g. grant_type=...)."""
        with self._log_lock:
            return [r for r in self.requests if (endpoint is None or r.endpoint == endpoint)
                    and all(getattr(r, k) == v for k, v in match.items())]

    def clear_log(self) -> None:
        with self._log_lock:
            self.requests.clear()
