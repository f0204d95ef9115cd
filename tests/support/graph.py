"""Graph stand-in helpers: fixtures, real tokens through msal and the test IdP, a webhook receiver.

    from tests.support.graph import graph, graph_org  # noqa: F401  (fixtures)

    def test_x(graph, graph_org):
        alice = graph_org.add_user("alice")
        token = graph_org.token(alice)                 # Mail.ReadWrite + Mail.Send (+ User.Read)
        graph.deliver(alice, raw)
        requests.get(f"{graph.base_url}/me/mailFolders/inbox/messages",
                     headers={"Authorization": f"Bearer {token}"}, verify=graph_org.ca_path)
"""
from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msal
import pytest
import requests
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from tests.graph import GraphServer
from tests.idp.driver import complete_authorization

GRAPH = "https://graph.microsoft.com"
MAIL_SCOPES = [f"{GRAPH}/Mail.ReadWrite", f"{GRAPH}/Mail.Send"]
SHARED_SCOPES = [f"{GRAPH}/Mail.ReadWrite.Shared", f"{GRAPH}/Mail.Send.Shared"]
# What an admin adds to the app registration for the Graph transport.
GRAPH_PERMISSIONS = [f"{GRAPH}/User.Read", f"{GRAPH}/Mail.Read", *MAIL_SCOPES, *SHARED_SCOPES,
                     f"{GRAPH}/Mail.Read.Shared"]
REDIRECT = "http://127.0.0.1:5000/auth/microsoft/callback"
_n = itertools.count(1)


@dataclass
class GraphOrg:
    """A tenant at the test IdP with an app registration listing the Graph mail permissions."""

    idp: Any
    ca_path: Path
    tenant: Any
    app: Any
    secret: str
    domain: str
    users: list[str] = field(default_factory=list)

    def add_user(self, local: str, name: str | None = None) -> str:
        email = f"{local}@{self.domain}"
        self.idp.add_user(self.tenant, email, password="pw", name=name)
        self.users.append(email)
        return email

    def http(self) -> requests.Session:
        session = requests.Session()
        session.verify = str(self.ca_path)
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify otherwise
        return session

    def msal_app(self, cache: msal.SerializableTokenCache | None = None
                 ) -> msal.ConfidentialClientApplication:
        return msal.ConfidentialClientApplication(
            self.app.client_id, client_credential=self.secret,
            authority=f"{self.idp.url}/{self.tenant.tenant_id}", instance_discovery=False,
            http_client=self.http(), token_cache=cache or msal.SerializableTokenCache())

    def sign_in(self, email: str, scopes: list[str] | None = None) -> dict[str, Any]:
        """The auth code flow through msal and the IdP's pages; the msal result."""
        cca = self.msal_app()
        flow = cca.initiate_auth_code_flow(scopes or MAIL_SCOPES, redirect_uri=REDIRECT,
                                           prompt="select_account")
        final = complete_authorization(flow["auth_uri"], email, "pw", ca_path=self.ca_path)
        answer = {k: v[0] for k, v in parse_qs(urlsplit(final).query).items()}
        result = cca.acquire_token_by_auth_code_flow(flow, answer)
        if "access_token" not in result:
            raise AssertionError(f"no token: {result}")
        return result

    def token(self, email: str, scopes: list[str] | None = None) -> str:
        return self.sign_in(email, scopes)["access_token"]

    def token_source(self, email: str, scopes: list[str] | None = None) -> "TokenSource":
        """What the transport is given: signed in once (auth code flow), then msal's cache and refresh
        token, as the product's token seam will do."""
        cache = msal.SerializableTokenCache()
        cca = self.msal_app(cache)
        wanted = scopes or MAIL_SCOPES
        flow = cca.initiate_auth_code_flow(wanted, redirect_uri=REDIRECT, prompt="select_account")
        final = complete_authorization(flow["auth_uri"], email, "pw", ca_path=self.ca_path)
        answer = {k: v[0] for k, v in parse_qs(urlsplit(final).query).items()}
        result = cca.acquire_token_by_auth_code_flow(flow, answer)
        if "access_token" not in result:
            raise AssertionError(f"no token: {result.get('error')}")
        return TokenSource(cca, wanted, cca.get_accounts()[0])


class TokenSource:
    """`source(force_refresh) -> access token` from one msal cache; counts what it was asked."""

    def __init__(self, cca: msal.ConfidentialClientApplication, scopes: list[str], account: dict) -> None:
        self.cca, self.scopes, self.account = cca, scopes, account
        self.calls = 0
        self.refreshes = 0
        self.override: str | None = None  # a test hands out this token instead (a stale or foreign one)
        self.sticky = False  # with `override`: even a forced refresh gives it
        self._lock = threading.Lock()

    def __call__(self, force_refresh: bool = False) -> str:
        with self._lock:
            self.calls += 1
            self.refreshes += int(force_refresh)
            if self.override is not None and (self.sticky or not force_refresh):
                return self.override
            result = self.cca.acquire_token_silent(self.scopes, self.account, force_refresh=force_refresh)
            if not result or "access_token" not in result:
                raise AssertionError(f"msal could not refresh: {result and result.get('error')}")
            return result["access_token"]


def make_graph_org(idp: Any, ca_path: Path) -> GraphOrg:
    n = next(_n)
    domain = f"graph{n}.test"
    tenant = idp.add_tenant(domain)
    secret = f"graph-secret-{n}"
    app = idp.add_app(tenant, secret=secret, redirect_uris=[REDIRECT],
                      permissions=list(GRAPH_PERMISSIONS))
    return GraphOrg(idp, Path(ca_path), tenant, app, secret, domain)


@pytest.fixture
def graph(ca, idp):
    """A fresh Graph stand-in per test (the IdP and CA are the session's)."""
    with GraphServer(ca, idp) as server:
        yield server


@pytest.fixture
def graph_org(idp, ca) -> GraphOrg:
    return make_graph_org(idp, ca.ca_path)


# ---- a webhook endpoint for change notifications ------------------------------------------------

class _Quiet(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@dataclass
class Received:
    path: str
    query: dict[str, str]
    body: Any


class NotificationReceiver:
    """An HTTPS endpoint (the test CA's certificate) that answers Graph's validation handshake
    and records notifications. Knobs: `validation` ("echo", "wrong", "html", "status", "slow"),
    `validation_status`, `slow_seconds`, `status` (what notifications get)."""

    def __init__(self, ca: Any, tls: bool = True) -> None:
        self.ca = ca
        self.tls = tls
        self.validation = "echo"
        self.validation_status = 404
        self.slow_seconds = 0.0
        self.status = 202
        self.validations: list[str] = []
        self.received: list[Received] = []
        self._cond = threading.Condition()
        self._server: BaseWSGIServer | None = None
        self.url = ""

    def _app(self, environ: dict, start_response: Any) -> Any:
        request = Request(environ)
        token = request.args.get("validationToken")
        if token is not None:
            with self._cond:
                self.validations.append(token)
            if self.validation == "slow":
                time.sleep(self.slow_seconds)
            if self.validation == "status":
                response = Response("nope", status=self.validation_status)
            elif self.validation == "wrong":
                response = Response(token[::-1], content_type="text/plain")
            elif self.validation == "html":
                response = Response(token, content_type="text/html")
            else:
                response = Response(token, content_type="text/plain; charset=utf-8")
            return response(environ, start_response)
        try:
            body = json.loads(request.get_data() or b"null")
        except ValueError:
            body = request.get_data()
        with self._cond:
            self.received.append(Received(request.path, dict(request.args), body))
            self._cond.notify_all()
        return Response(b"", status=self.status)(environ, start_response)

    def start(self) -> "NotificationReceiver":
        server = make_server("127.0.0.1", 0, self._app, threaded=True, request_handler=_Quiet)
        if self.tls:
            context = self.ca.server_context("webhook")
            server.socket = context.wrap_socket(server.socket, server_side=True,
                                                do_handshake_on_connect=False)
        self._server = server
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{server.server_port}"
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True, name="webhook").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "NotificationReceiver":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def notifications(self, path: str | None = None) -> list[dict[str, Any]]:
        """Each changeNotification / lifecycle notification received (flattened `value`)."""
        with self._cond:
            return [item for r in self.received if path is None or r.path == path
                    for item in (r.body or {}).get("value", [])]

    def wait_for(self, count: int, path: str | None = None, timeout: float = 10.0
                 ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.notifications(path)) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self.notifications(path)


@pytest.fixture
def webhook(ca):
    with NotificationReceiver(ca) as receiver:
        yield receiver
