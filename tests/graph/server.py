"""The Graph stand-in: wiring, HTTPS server lifecycle and mailbox resolution.

    with GraphServer(ca, idp) as graph:
        graph.url  # https://127.0.0.1:PORT ; API base graph.url + "/v1.0"

Test controls (deliver, throttle, fail_next, ...) are in control.py.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from . import errors
from .auth import Caller, TokenVerifier
from .clock import Clock
from .control import Controls, SubscriptionControls
from .delta import DeltaTracker
from .model import Mailbox
from .notifier import Notifier
from .routes import GraphApp, LoggedRequest
from .sending import Sender
from .store import Store
from .subscriptions import MAX_MINUTES
from .throttle import Throttle

log = logging.getLogger(__name__)


class _QuietHandler(WSGIRequestHandler):
    """No access log (URLs carry tokens); TLS noise from port probes at debug level."""

    timeout = 30

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def log_error(self, format: str, *args: Any) -> None:
        if format.startswith("SSL error"):
            log.debug(format, *args)
        else:
            super().log_error(format, *args)


class GraphServer(Controls, SubscriptionControls):
    """A local Microsoft Graph v1.0 (mail, sendMail, delta, subscriptions) over HTTPS."""

    def __init__(self, ca: Any, idp: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.ca = ca
        self.idp = idp
        self.host = host
        self.port = port
        self.clock = Clock()
        self.store = Store(self.clock)
        self.verifier = TokenVerifier(idp, str(ca.ca_path), self.clock)
        self.delta = DeltaTracker()
        self.limits = Throttle(self.clock)
        self.sender = Sender(self.store, self.clock)
        self.notifier = Notifier(self.clock, str(ca.ca_path))
        self.store.listeners.append(self.notifier.on_change)
        self.allow_http_notifications = False  # real Graph: HTTPS only
        self.validation_timeout = 10.0
        self.max_subscription_minutes = MAX_MINUTES
        self.requests: list[LoggedRequest] = []
        self._log_lock = threading.Lock()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """e.g. https://127.0.0.1:54321 (no trailing slash); the API is under /v1.0."""
        if self._url is None:
            raise RuntimeError("GraphServer is not started")
        return self._url

    @property
    def base_url(self) -> str:
        return self.url + "/v1.0"

    def start(self) -> "GraphServer":
        context = self.ca.server_context("graph")
        server = make_server(self.host, self.port, GraphApp(self), threaded=True,
                             request_handler=_QuietHandler)
        server.socket = context.wrap_socket(server.socket, server_side=True,
                                            do_handshake_on_connect=False)
        server.ssl_context = context
        self._server = server
        self.port = server.server_port
        self._url = f"https://{self.host}:{self.port}"
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="graph-standin", daemon=True)
        self._thread.start()
        self.notifier.start()
        return self

    def stop(self) -> None:
        self.notifier.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "GraphServer":
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- used by the routes ------------------------------------------------------------------

    def log_request(self, entry: LoggedRequest) -> None:
        with self._log_lock:
            self.requests.append(entry)

    def user_mailbox(self, user: Any) -> Mailbox:
        return self.store.add_mailbox(user.email, user.name, user.oid, user.tenant.tenant_id)

    def resolve_mailbox(self, caller: Caller, ref: str | None) -> Mailbox:
        """`me` (ref None) or /users/{id | userPrincipalName}, within the caller's tenant."""
        if ref is None:
            if caller.is_app or caller.user is None:
                raise errors.bad_request("/me request is only valid with delegated "
                                         "authentication flow.")
            return self.user_mailbox(caller.user)
        box = self.store.find(ref)
        if box is None:
            user = self.idp.users.get(ref.lower()) or next(
                (u for u in list(self.idp.users.values()) if u.oid.lower() == ref.lower()), None)
            if user is not None:
                box = self.user_mailbox(user)
        if box is None or (box.tenant_id is not None and box.tenant_id != caller.tenant_id):
            raise errors.invalid_user(ref)
        return box
