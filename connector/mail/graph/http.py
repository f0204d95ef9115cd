"""HTTPS to Microsoft Graph for one mailbox: token, per-mailbox concurrency, retries, errors.

- TLS is verified against `[tls] ca_bundle` (or the system store) and never against
  REQUESTS_CA_BUNDLE (`trust_env = False`, as identity/microsoft.py does).
- Outlook allows 4 concurrent requests per app and mailbox
  (https://learn.microsoft.com/graph/throttling-limits#outlook-service-limits): every request of this
  process to one mailbox passes one gate of that size, whichever object sends it.
- 429, and 503 with Retry-After, raise at once with `retry_after`: the caller backs off this mailbox
  only (https://learn.microsoft.com/graph/throttling), nothing here sleeps on them.
- Network errors and other 5xx are retried a few times with backoff, except for requests that must
  not run twice (sendMail): those raise, and the outbox looks the mail up in Sent Items instead.
- A 401 gets one fresh token; a second 401 means the grant is gone (`reconnect`).
- Only links under this Graph host ever get the token; no token, link or query reaches a log.
"""
from __future__ import annotations

import base64
import json
import logging
import random
import threading
import time
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from .errors import GraphError, Where, explain, unreachable

log = logging.getLogger(__name__)

TokenSource = Callable[[bool], str]  # force_refresh -> an access token for https://graph.microsoft.com
MAILBOX_CONCURRENCY = 4
TRANSIENT_STATUSES = (500, 502, 503, 504)
# Immutable ids (https://learn.microsoft.com/graph/outlook-immutable-id) survive moves between folders,
# so a mail keeps one key from the delta query through import, failures and post-import actions.
PREFER = 'IdType="ImmutableId"'
_gates: dict[tuple[str, str], threading.BoundedSemaphore] = {}
_gates_lock = threading.Lock()


def mailbox_gate(base_url: str, address: str) -> threading.BoundedSemaphore:
    """The process-wide gate for one mailbox at one Graph host."""
    key = (base_url.lower(), address.lower())
    with _gates_lock:
        gate = _gates.get(key)
        if gate is None:
            gate = _gates[key] = threading.BoundedSemaphore(MAILBOX_CONCURRENCY)
        return gate


def token_scopes(token: str) -> frozenset[str]:
    """The delegated permissions (`scp`) a Graph token carries, to name a missing one; empty when the
    token is not a readable JWT. Only the claim is read: the signature is Graph's business."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return frozenset(str(claims.get("scp", "")).split())
    except (IndexError, ValueError, TypeError, AttributeError):
        return frozenset()


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _error_body(response: requests.Response) -> tuple[str, str]:
    try:
        error = response.json().get("error") or {}
        return str(error.get("code") or ""), str(error.get("message") or "")[:500]
    except (ValueError, AttributeError):
        return "", ""


class GraphHttp:
    """Requests to `{graph_host}/v1.0` for one mailbox, signed with `token`."""

    def __init__(self, graph_host: str, token: TokenSource, where: Where, ca_bundle: str | None = None,
                 *, retries: int = 3, backoff: float = 0.5, timeout: tuple[float, float] = (10.0, 120.0),
                 concurrency: int = MAILBOX_CONCURRENCY) -> None:
        self.base = graph_host.rstrip("/") + "/v1.0"
        self._token_source = token
        self._token: str | None = None
        self.where = where
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.gate = mailbox_gate(self.base, where.address)
        self.session = requests.Session()
        self.session.trust_env = False  # REQUESTS_CA_BUNDLE and proxies from the environment stay out
        self.session.verify = ca_bundle or True
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(concurrency, MAILBOX_CONCURRENCY) + 2)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.headers.update({"Accept": "application/json"})
        self.requests_sent = 0
        self._token_lock = threading.Lock()

    # -- links ------------------------------------------------------------------------------
    def url(self, path_or_link: str) -> str:
        """An absolute URL under this Graph host: a path relative to /v1.0, or a link Graph gave us."""
        if "://" not in path_or_link:
            return f"{self.base}/{path_or_link.lstrip('/')}"
        if not self.owns(path_or_link):
            raise GraphError(f"Microsoft Graph sent a link outside {self.where.graph_host} for "
                             f"{self.where.address}; it was not followed (check [microsoft] graph_host).",
                             code="ForeignLink", permanent=True)
        return path_or_link

    def owns(self, link: str) -> bool:
        parts, base = urlsplit(link), urlsplit(self.base)
        return (parts.scheme, parts.netloc.lower()) == (base.scheme, base.netloc.lower()) \
            and (parts.path + "/").startswith(base.path + "/")

    # -- tokens -----------------------------------------------------------------------------
    def _bearer(self, refused: str | None = None) -> str:
        """The token to send; with `refused` (a token Graph answered 401 to) a fresh one, fetched once
        however many threads were refused with it."""
        with self._token_lock:
            if self._token is None or (refused is not None and self._token == refused):
                self._token = self._token_source(refused is not None)
                scopes = token_scopes(self._token)
                if scopes != self.where.scopes:
                    self.where = Where(self.where.address, self.where.user, self.where.shared,
                                       self.where.graph_host, scopes)
            return self._token

    # -- requests ---------------------------------------------------------------------------
    def request(self, method: str, path_or_link: str, *, operation: str = "read", idempotent: bool = True,
                params: Mapping[str, str] | None = None, json_body: Any = None, data: bytes | None = None,
                headers: Mapping[str, str] | None = None, ok_statuses: tuple[int, ...] = ()) -> requests.Response:
        """The 2xx answer (or one in `ok_statuses`), else a GraphError explaining the failure."""
        url = self.url(path_or_link)
        refreshed = False
        attempt = 0
        prefer = ", ".join(p for p in ((headers or {}).get("Prefer"), PREFER) if p)
        while True:
            token = self._bearer()
            extra = {**(headers or {}), "Authorization": f"Bearer {token}", "Prefer": prefer}
            try:
                with self.gate:
                    self.requests_sent += 1
                    response = self.session.request(method, url, params=params, json=json_body, data=data,
                                                    headers=extra, timeout=self.timeout, allow_redirects=False)
                    response.content  # read the body inside the gate: the request lasts until then
            except requests.exceptions.SSLError as exc:
                raise unreachable(self.where, type(exc).__name__, tls=True) from None
            except (requests.ConnectionError, requests.Timeout) as exc:
                if idempotent and attempt < self.retries:
                    attempt += 1
                    self._sleep(attempt)
                    continue
                raise unreachable(self.where, type(exc).__name__) from None
            status = response.status_code
            log.debug("graph %s %s -> %s", method, urlsplit(url).path, status)
            if 200 <= status < 300 or status in ok_statuses:
                return response
            code, detail = _error_body(response)
            retry_after = _retry_after(response)
            if status == 401 and not refreshed:
                refreshed = True
                self._bearer(refused=token)
                continue
            if status in TRANSIENT_STATUSES and retry_after is None and idempotent and attempt < self.retries:
                attempt += 1
                self._sleep(attempt)
                continue
            raise explain(self.where, status, code, detail, operation, retry_after,
                          response.headers.get("request-id", ""))

    def _sleep(self, attempt: int) -> None:
        time.sleep(self.backoff * (2 ** (attempt - 1)) * (0.5 + random.random()))

    def get_json(self, path_or_link: str, **kwargs: Any) -> dict[str, Any]:
        response = self.request("GET", path_or_link, **kwargs)
        try:
            body = response.json()
        except ValueError:
            raise GraphError(f"Microsoft Graph answered something other than JSON for {self.where.address}; "
                             "check [microsoft] graph_host.", code="NotJson", retry_after=60.0) from None
        if not isinstance(body, dict):
            raise GraphError(f"Microsoft Graph answered unexpected JSON for {self.where.address}.",
                             code="NotJson", retry_after=60.0)
        return body

    def close(self) -> None:
        self.session.close()
