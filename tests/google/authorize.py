"""GET /o/oauth2/v2/auth: check the request, then start the browser leg (chooser or sign-in).

Parameters as in the web-server guide, "Step 1: Set authorization parameters"
(https://developers.google.com/identity/protocols/oauth2/web-server#creatingclient):
client_id, redirect_uri (exact match with a registered URI), response_type=code, scope, state,
access_type (online|offline), prompt (none, consent, select_account: space separated),
login_hint (email or sub), hd, include_granted_scopes, nonce, code_challenge and
code_challenge_method (plain|S256, PKCE optional for web clients). Anything wrong before the
redirect URI is trusted, and every invalid parameter, is shown on Google's error page; only
the user's decisions and prompt=none outcomes go back to the app.
"""
from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import urlencode

from flask import Response, redirect

from . import pages, scopes as scope_rules
from .errors import (PageError, invalid_request_page, redirect_mismatch_page,
                     unknown_client_page)
from .model import Client, User
from .server import GoogleProvider

PENDING_LIFETIME = 3600
PROMPTS = {"none", "consent", "select_account"}
_PKCE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")


@dataclass(eq=False)
class Pending:
    """An authorization request between its pages (hidden form field `rid`)."""

    rid: str
    client: Client
    redirect_uri: str
    scopes: list[str]  # canonical
    state: str | None
    nonce: str | None
    access_type: str
    prompt: set[str]
    login_hint: str
    hd: str
    include_granted_scopes: bool
    code_challenge: str | None
    code_challenge_method: str
    details: dict[str, str]  # what Google's error pages list as "Request details"
    created: float = field(default_factory=time.time)
    user: User | None = None
    warned: bool = False  # passed the unverified-app screen


def page_error(err: PageError, details: Mapping[str, str]) -> Response:
    return Response(pages.error(err, dict(details)), status=err.status, mimetype="text/html")


def send_back(pending: Pending, issuer: str, params: dict[str, str]) -> Response:
    """Redirect to the app: state first, then `iss` (RFC 9207, advertised in discovery)."""
    ordered = {"state": pending.state} if pending.state is not None else {}
    ordered["iss"] = issuer
    ordered.update(params)
    separator = "&" if "?" in pending.redirect_uri else "?"
    return redirect(pending.redirect_uri + separator + urlencode(ordered), code=302)


def start(provider: GoogleProvider, args: Mapping[str, str], sid: str | None) -> Response:
    details = {k: v for k, v in args.items()}
    details["flowName"] = "GeneralOAuthFlow"
    try:
        pending = _validate(provider, args, details)
    except PageError as err:
        return page_error(err, details)
    from . import consent  # the pages after this one; consent.py imports this module

    if "none" in pending.prompt:
        return consent.silent(provider, pending, sid)
    with provider.directory_lock:
        now = time.time()
        for rid in [r for r, p in provider.pending.items() if now - p.created > PENDING_LIFETIME]:
            del provider.pending[rid]
        provider.pending[pending.rid] = pending
    return consent.first_page(provider, pending, sid)


def _required(args: Mapping[str, str], name: str) -> str:
    value = args.get(name, "")
    if not value:
        raise invalid_request_page(f"Missing required parameter: {name}")
    return value


def _validate(provider: GoogleProvider, args: Mapping[str, str],
              details: dict[str, str]) -> Pending:
    client_id = _required(args, "client_id")
    client = provider.find_client(client_id)
    if client is None:
        raise unknown_client_page()
    redirect_uri = _required(args, "redirect_uri")
    if redirect_uri not in client.redirect_uris:
        raise redirect_mismatch_page()
    response_type = _required(args, "response_type")
    if response_type.split() != ["code"]:
        raise PageError(400, "unsupported_response_type",
                        "Access blocked: This app's request is invalid",
                        f"Invalid response_type: {response_type}. This stand-in serves the "
                        "authorization-code flow of web server applications only.")
    requested, unknown = scope_rules.parse(_required(args, "scope"))
    if unknown:
        raise PageError(400, "invalid_scope", "Access blocked: This app's request is invalid",
                        f"Some requested scopes were invalid. {{invalid=[{', '.join(unknown)}]}}")
    access_type = args.get("access_type", "online")
    if access_type not in ("online", "offline"):
        raise invalid_request_page(f"Invalid access_type: {access_type}")
    prompt = set(args.get("prompt", "").split())
    if not prompt <= PROMPTS:
        raise invalid_request_page(f"Invalid prompt: {args['prompt']}")
    if "none" in prompt and len(prompt) > 1:
        raise invalid_request_page("prompt=none cannot be combined with other prompt values")
    challenge = args.get("code_challenge") or None
    method = args.get("code_challenge_method", "plain" if challenge else "")
    if challenge is None and method:
        raise invalid_request_page("Missing code_challenge for code_challenge_method "
                                   f"{method}")
    if challenge is not None and (method not in ("plain", "S256") or not _PKCE.match(challenge)):
        raise invalid_request_page("Invalid code_challenge or code_challenge_method")
    include = args.get("include_granted_scopes", "false")
    if include not in ("true", "false"):
        raise invalid_request_page(f"Invalid include_granted_scopes: {include}")
    return Pending(secrets.token_urlsafe(24), client, redirect_uri, requested, args.get("state"),
                   args.get("nonce"), access_type, prompt, args.get("login_hint", ""),
                   args.get("hd", ""), include == "true", challenge, method, details)


def pending_for(provider: GoogleProvider, rid: str) -> Pending | None:
    with provider.directory_lock:
        pending = provider.pending.get(rid)
    if pending is None or time.time() - pending.created > PENDING_LIFETIME:
        return None
    return pending


def forget(provider: GoogleProvider, pending: Pending) -> None:
    with provider.directory_lock:
        provider.pending.pop(pending.rid, None)


EXPIRED = PageError(400, "invalid_request", "Something went wrong",
                    "This sign-in request has expired or was already used. Go back to the app "
                    "and start again.")
