"""POST /token (oauth2.googleapis.com/token): authorization_code and refresh_token grants.

Web-server guide, "Step 5: Exchange authorization code for refresh and access tokens" and
"Refreshing an access token (offline access)". Client authentication by client_secret_post or
client_secret_basic (discovery's token_endpoint_auth_methods_supported). Error bodies as Google
sends them: unknown client 401 invalid_client "The OAuth client was not found.", wrong secret
401 invalid_client "Unauthorized", a code that is used, expired or unknown invalid_grant
"Bad Request", garbage "Malformed auth code.", PKCE "Missing code verifier." / "Invalid code
verifier.", a dead refresh token "Token has been expired or revoked.", a refresh token of
another client 401 unauthorized_client "Unauthorized".
"""
from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import unquote_plus

from . import scopes as scope_rules
from .errors import REVOKED, TokenError, admin_policy_message, invalid_grant, invalid_request
from .model import CODE_PREFIX, AccessToken, Client, RefreshToken, User
from .server import GoogleProvider
from .tokens import b64url, id_token_claims

_OPAQUE = re.compile(r"^[A-Za-z0-9._/~+-]+$")


@dataclass
class CallInfo:
    """What the request log keeps of a token call."""

    client_id: str | None = None
    grant_type: str | None = None
    auth_method: str | None = None
    error: str | None = None


def handle(provider: GoogleProvider, form: Mapping[str, str], authorization: str | None,
           info: CallInfo) -> tuple[int, dict[str, Any]]:
    info.grant_type = form.get("grant_type") or None
    try:
        client = _authenticate(provider, form, authorization, info)
        grant_type = form.get("grant_type", "")
        with provider.store.lock:
            if grant_type == "authorization_code":
                return 200, _authorization_code(provider, client, form)
            if grant_type == "refresh_token":
                return 200, _refresh_token(provider, client, form)
        raise TokenError("unsupported_grant_type", f"Invalid grant_type: {grant_type}")
    except TokenError as err:
        info.error = err.error
        return err.status, err.body()


def _authenticate(provider: GoogleProvider, form: Mapping[str, str],
                  authorization: str | None, info: CallInfo) -> Client:
    client_id, secret = form.get("client_id", ""), form.get("client_secret")
    info.auth_method = "client_secret_post" if client_id else None
    if authorization and authorization.lower().startswith("basic "):
        try:
            raw = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise TokenError("invalid_client", "Unauthorized", 401) from None
        basic_id, _, basic_secret = raw.partition(":")
        client_id, secret = unquote_plus(basic_id), unquote_plus(basic_secret)
        info.auth_method = "client_secret_basic"
    info.client_id = client_id or None
    if not client_id:
        raise invalid_request("Could not determine client ID from request.")
    client = provider.find_client(client_id)
    if client is None:
        raise TokenError("invalid_client", "The OAuth client was not found.", 401)
    if not secret:
        raise invalid_request("client_secret is missing.")
    if not secrets.compare_digest(secret.encode(), client.secret.encode()):
        raise TokenError("invalid_client", "Unauthorized", 401)
    return client


def _pkce_ok(method: str, challenge: str, verifier: str) -> bool:
    if method == "S256":
        verifier = b64url(hashlib.sha256(verifier.encode("ascii", "replace")).digest())
    return secrets.compare_digest(verifier.encode(), challenge.encode())


def _authorization_code(provider: GoogleProvider, client: Client,
                        form: Mapping[str, str]) -> dict[str, Any]:
    value = form.get("code", "")
    if not value:
        raise invalid_request("Missing required parameter: code")
    code = provider.store.codes.get(value)
    if code is None:
        shaped = value.startswith(CODE_PREFIX) and _OPAQUE.match(value)
        raise invalid_grant("Bad Request" if shaped else "Malformed auth code.")
    if code.client is not client or code.used or \
            time.time() - code.issued > provider.code_lifetime:
        raise invalid_grant()
    redirect_uri = form.get("redirect_uri", "")
    if not redirect_uri:
        raise invalid_request("Missing parameter: redirect_uri")
    if redirect_uri != code.redirect_uri:
        raise TokenError("redirect_uri_mismatch", "Bad Request")
    verifier = form.get("code_verifier", "")
    if code.code_challenge is None:
        if verifier:
            raise invalid_grant("code_verifier or verifier is not needed.")
    elif not verifier:
        raise invalid_grant("Missing code verifier.")
    elif not _pkce_ok(code.code_challenge_method, code.code_challenge, verifier):
        raise invalid_grant("Invalid code verifier.")
    _check_policy(provider, code.user, client)
    code.used = True
    access, refresh = provider.store.issue(client, code.user, code.scopes, code.access_type,
                                           new_refresh=code.issue_refresh)
    return _body(provider, access, refresh, code.nonce)


def _refresh_token(provider: GoogleProvider, client: Client,
                   form: Mapping[str, str]) -> dict[str, Any]:
    value = form.get("refresh_token", "")
    if not value:
        raise invalid_request("Missing required parameter: refresh_token")
    token = provider.store.refresh.get(value)
    if token is None:
        raise invalid_grant()
    if token.client is not client:
        raise TokenError("unauthorized_client", "Unauthorized", 401)
    if provider.store.refresh_problem(token) is not None:
        raise invalid_grant(REVOKED)
    _check_policy(provider, token.user, client)
    scopes = token.scopes
    if form.get("scope"):
        asked, unknown = scope_rules.parse(form["scope"])
        if unknown or not set(asked) <= set(token.scopes):
            raise TokenError("invalid_scope", "Bad Request")
        scopes = asked
    token.last_used = time.time()
    access, _ = provider.store.issue(client, token.user, scopes, "offline", refresh=token)
    return _body(provider, access, None, None)


def _check_policy(provider: GoogleProvider, user: User, client: Client) -> None:
    if provider.is_restricted(user, client):
        raise TokenError("admin_policy_enforced", admin_policy_message(user.hd or ""))


def _body(provider: GoogleProvider, access: AccessToken, refresh: RefreshToken | None,
          nonce: str | None) -> dict[str, Any]:
    """Key order as Google's responses; `refresh_token` only when a new one is issued."""
    body: dict[str, Any] = {"access_token": access.token,
                            "expires_in": int(access.expires - time.time() + 0.5)}
    if refresh is not None:
        body["refresh_token"] = refresh.token
    body["scope"] = " ".join(access.scopes)
    body["token_type"] = "Bearer"
    if scope_rules.OPENID in access.scopes:
        body["id_token"] = provider.signer.sign(id_token_claims(
            provider.issuer, access.client, access.user, access.scopes, access.token, nonce))
    return body
