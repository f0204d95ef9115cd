"""Google's OpenID discovery document, checked and kept an hour per authority.

Everything else (token, revocation and JWKS endpoints) is found through it, reached with the configured
CA bundle (never REQUESTS_CA_BUNDLE), so the test stand-in is a configuration change.
"""
from __future__ import annotations

import threading
import time

import requests

from .errors import Explained
from .microsoft import IdentityError, http_session

HTTP_TIMEOUT = 20
METADATA_TTL_SECONDS = 3600.0
NEEDED = frozenset({"issuer", "authorization_endpoint", "token_endpoint", "jwks_uri"})

_cache: dict[tuple[str, str | None], tuple[float, dict]] = {}
_lock = threading.Lock()


def metadata_url(authority: str) -> str:
    return f"{authority}/.well-known/openid-configuration"


def unreachable(authority: str, exc: Exception) -> IdentityError:
    """The sentence for a person when Google cannot be reached, naming the likely fix."""
    if isinstance(exc, requests.exceptions.SSLError):
        fix = ("its TLS certificate could not be verified: set [tls] ca_bundle to the CA that signed it, or "
               "check [google] authority")
    else:
        fix = "check [google] authority, DNS, the proxy and the firewall"
    return IdentityError(Explained(f"Google's sign-in service at {authority} cannot be reached "
                                   f"({type(exc).__name__}): {fix}."))


def metadata(authority: str, ca_bundle: str | None, *, fresh: bool = False) -> dict:
    """The discovery document; cached because the worker refreshes tokens often. Raises IdentityError."""
    key = (metadata_url(authority), ca_bundle)
    with _lock:
        cached = _cache.get(key)
    if cached and not fresh and time.monotonic() - cached[0] < METADATA_TTL_SECONDS:
        return cached[1]
    document = _discover(authority, ca_bundle)
    with _lock:
        _cache[key] = (time.monotonic(), document)
    return document


def _discover(authority: str, ca_bundle: str | None) -> dict:
    url = metadata_url(authority)
    http = http_session(ca_bundle)
    try:
        response = http.get(url, timeout=HTTP_TIMEOUT)
    except requests.exceptions.RequestException as exc:
        raise unreachable(authority, exc) from None
    finally:
        http.close()
    not_metadata = IdentityError(Explained(
        f"{authority} did not answer like Google's sign-in service (HTTP {response.status_code} at {url} without "
        "OpenID metadata): check [google] authority (https://accounts.google.com)."))
    try:
        document = response.json()
    except ValueError:
        raise not_metadata from None
    if response.status_code != 200 or not isinstance(document, dict) or not NEEDED <= document.keys():
        raise not_metadata
    if str(document["issuer"]).rstrip("/") != authority:
        raise IdentityError(Explained(
            f"The sign-in service at {authority} says its issuer is {document['issuer']}: set [google] "
            f"authority to {document['issuer']}."))
    if not all(str(document[k]).startswith("https://") for k in NEEDED - {"issuer"}):
        raise not_metadata
    return document
