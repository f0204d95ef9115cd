"""The token endpoint: authorization_code (PKCE), refresh_token (rotation), client_credentials.

Checks run in Microsoft's order: tenant, client, authority rules, secret, then the grant.
Every call is counted in `idp.token_calls[(email or client_id, grant_type)]`.
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
from .authorize import app_route_error
from .errors import AADError, missing_parameter, revoked, unknown_client, unknown_tenant
from .model import App, User
from .server import (CODE_PREFIX, REFRESH_PREFIX, REFRESH_TOKEN_IDLE_LIMIT, IdentityProvider,
                     IssuedAccessToken, RefreshGrant, Route)
from .tokens import access_token_claims, app_token_claims, b64url, client_info, id_token_claims

_OPAQUE = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass
class _Call:
    who: str = ""


def handle(idp: IdentityProvider, segment: str, form: Mapping[str, str],
           authorization: str | None, correlation_id: str | None) -> tuple[int, dict[str, Any]]:
    """One token request -> (HTTP status, JSON body)."""
    call = _Call()
    try:
        return 200, _handle(idp, segment, form, authorization, call)
    except AADError as err:
        return err.status, err.body(correlation_id)
    finally:
        with idp.lock:
            idp.token_calls[(call.who, form.get("grant_type", ""))] += 1
            idp.token_calls_total += 1


def _client_auth(form: Mapping[str, str], authorization: str | None) -> tuple[str, str | None]:
    """client_secret_basic or client_secret_post (Basic wins, like RFC 6749 suggests)."""
    if authorization and authorization.lower().startswith("basic "):
        try:
            raw = base64.b64decode(authorization[6:].strip()).decode("utf-8")
            client_id, _, secret = raw.partition(":")
            return unquote_plus(client_id), unquote_plus(secret)
        except (ValueError, UnicodeDecodeError):
            raise AADError(7000215, "invalid_client", "Invalid client secret provided.",
                           status=401) from None
    return form.get("client_id", ""), form.get("client_secret")


def _handle(idp: IdentityProvider, segment: str, form: Mapping[str, str],
            authorization: str | None, call: _Call) -> dict[str, Any]:
    route = idp.resolve(segment)
    if route is None:
        raise unknown_tenant(segment)
    client_id, secret = _client_auth(form, authorization)
    call.who = client_id
    if not client_id:
        raise missing_parameter("client_id")
    grant_type = form.get("grant_type", "")
    if not grant_type:
        raise missing_parameter("grant_type")
    with idp.lock:
        app = idp.apps.get(client_id)
    if app is None:
        raise unknown_client(client_id, route.tenant.tenant_id if route.tenant else segment)
    route_err = app_route_error(app, route)
    if route_err is not None:
        raise route_err
    _check_secret(app, secret)
    with idp.lock:
        if grant_type == "authorization_code":
            return _authorization_code(idp, app, form, call)
        if grant_type == "refresh_token":
            return _refresh_token(idp, app, form, call)
        if grant_type == "client_credentials":
            return _client_credentials(idp, app, route, form)
    raise AADError(70003, "unsupported_grant_type",
                   f"The app requested an unsupported grant type '{grant_type}'.")


def _check_secret(app: App, secret: str | None) -> None:
    if not secret:
        raise AADError(7000218, "invalid_client",
                       "The request body must contain the following parameter: 'client_assertion' "
                       "or 'client_secret'.", status=401)
    if app.secret is None or not secrets.compare_digest(secret.encode(), app.secret.encode()):
        raise AADError(7000215, "invalid_client",
                       "Invalid client secret provided. Ensure the secret being sent in the "
                       "request is the client secret value, not the client secret ID, for a "
                       f"secret added to app '{app.client_id}'.", status=401)
    if app.secret_expired:
        raise AADError(7000222, "invalid_client",
                       f"The provided client secret keys for app '{app.client_id}' are expired. "
                       "Visit the Azure portal to create new keys for your app: "
                       "https://aka.ms/NewClientSecret, or consider using certificate credentials "
                       "for added security: https://aka.ms/certCreds.", status=401)


def _unknown_grant(value: str, prefix: str, what: str) -> AADError:
    """Ours-but-unknown (70000) versus not even shaped like a grant (9002313)."""
    if value.startswith(prefix) and _OPAQUE.match(value):
        return AADError(70000, "invalid_grant",
                        f"Provided grant is invalid or malformed. The {what} is not valid.")
    return AADError(9002313, "invalid_grant", "Invalid request. Request is malformed or invalid.")


def _authorization_code(idp: IdentityProvider, app: App, form: Mapping[str, str],
                        call: _Call) -> dict[str, Any]:
    code = form.get("code", "")
    if not code:
        raise missing_parameter("code")
    grant = idp.codes.get(code)
    if grant is None:
        raise _unknown_grant(code, CODE_PREFIX, "authorization code")
    call.who = grant.user.email
    if grant.app is not app:
        raise AADError(70000, "invalid_grant", "Provided grant is invalid or malformed. The "
                       "authorization code was issued to a different client.")
    if grant.used:
        raise AADError(54005, "invalid_grant",
                       "OAuth2 Authorization code was already redeemed, please retry with a new "
                       "valid code or use an existing refresh token.")
    if time.time() - grant.issued > idp.code_lifetime:
        raise AADError(70008, "invalid_grant",
                       "The provided authorization code or refresh token has expired due to "
                       "inactivity. Send a new interactive authorization request for this user and "
                       "resource.")
    if form.get("redirect_uri", "") != grant.redirect_uri:
        raise AADError(500112, "invalid_grant",
                       f"The reply address '{form.get('redirect_uri', '')}' does not match the "
                       "reply address provided when requesting Authorization code.")
    verifier = form.get("code_verifier", "")
    if not verifier or b64url(hashlib.sha256(verifier.encode("ascii", "replace")).digest()) \
            != grant.code_challenge:
        raise AADError(501481, "invalid_grant",
                       "The Code_Verifier does not match the code_challenge supplied in the "
                       "authorization request.")
    raw_scope = form.get("scope") or " ".join(grant.scopes)
    request = scope_rules.parse(raw_scope, app.permissions)
    asked = {s.lower() for s in grant.scopes} | set(request.oidc)
    body = _user_tokens(idp, app, grant.user, request, raw_scope,
                        refresh_scopes=grant.scopes if "offline_access" in asked else None,
                        id_token="openid" in asked, nonce=grant.nonce, auth_time=grant.auth_time,
                        with_client_info=form.get("client_info") == "1")
    grant.used = True
    return body


def _refresh_token(idp: IdentityProvider, app: App, form: Mapping[str, str],
                   call: _Call) -> dict[str, Any]:
    token = form.get("refresh_token", "")
    if not token:
        raise missing_parameter("refresh_token")
    grant = idp.refresh_tokens.get(token)
    if grant is None:
        raise _unknown_grant(token, REFRESH_PREFIX, "refresh token")
    call.who = grant.user.email
    if grant.app is not app:
        raise AADError(70000, "invalid_grant", "Provided grant is invalid or malformed. The "
                       "refresh token was issued to a different client.")
    if grant.revoked_code is not None:
        raise revoked(grant.revoked_code)
    if idp.strict_rotation and grant.used:
        raise AADError(70000, "invalid_grant", "Provided grant is invalid or malformed. The "
                       "refresh token was already redeemed.")
    now = time.time()
    if now - grant.last_used > REFRESH_TOKEN_IDLE_LIMIT:
        raise revoked(700082)
    raw_scope = form.get("scope") or " ".join(grant.scopes)
    request = scope_rules.parse(raw_scope, app.permissions)
    body = _user_tokens(idp, app, grant.user, request, raw_scope, refresh_scopes=grant.scopes,
                        id_token="openid" in request.oidc, nonce=None, auth_time=None,
                        with_client_info=form.get("client_info") == "1")
    grant.used = True
    grant.last_used = now
    return body


def _user_tokens(idp: IdentityProvider, app: App, user: User, request: scope_rules.ScopeRequest,
                 raw_scope: str, *, refresh_scopes: list[str] | None, id_token: bool,
                 nonce: str | None, auth_time: int | None,
                 with_client_info: bool) -> dict[str, Any]:
    """Access token for one resource (+ refresh token, id_token, client_info)."""
    audience, requested = request.single_resource(raw_scope)
    granted = idp.granted(user, app)
    missing = [s for s in requested if scope_rules.key(s) not in granted]
    if missing:
        raise AADError(65001, "invalid_grant",
                       "The user or administrator has not consented to use the application with "
                       f"ID '{app.client_id}' named '{app.name}'. Send an interactive "
                       "authorization request for this user and resource.",
                       suberror="consent_required")
    # Like Microsoft: the token carries every consented permission of its resource.
    scope_strings = list(requested)
    have = {scope_rules.key(s) for s in requested}
    for key, scope in granted.items():
        if key.startswith(audience + "/") and key not in have:
            scope_strings.append(scope)
            have.add(key)
    perms = [scope_rules.resource_of(s)[1] for s in scope_strings]  # type: ignore[index]
    if audience == scope_rules.GRAPH:
        perms += [s for s in request.oidc if s != "offline_access"]
    lifetime = int(idp.access_token_lifetime)
    uti = b64url(secrets.token_bytes(16))
    claims = access_token_claims(user, app, audience, " ".join(perms), lifetime, uti)
    idp.access_tokens[uti] = IssuedAccessToken(uti, user.email, app.client_id, claims["exp"])
    body: dict[str, Any] = {
        "token_type": "Bearer",
        "scope": " ".join(scope_strings) or " ".join(perms),
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": idp.signer.sign(claims),
    }
    if refresh_scopes is not None:
        token = idp.new_refresh_token()
        now = time.time()
        idp.refresh_tokens[token] = RefreshGrant(token, app, user, list(refresh_scopes), now, now)
        body["refresh_token"] = token
    if id_token:
        body["id_token"] = idp.signer.sign(id_token_claims(
            user, app, idp.issuer(user.tenant.tenant_id), nonce, auth_time))
    if with_client_info:
        body["client_info"] = client_info(user)
    return body


def _client_credentials(idp: IdentityProvider, app: App, route: Route,
                        form: Mapping[str, str]) -> dict[str, Any]:
    raw = form.get("scope", "").strip()
    if not raw:
        raise missing_parameter("scope")
    parts = raw.split()
    if len(parts) != 1 or not parts[0].endswith("/.default"):
        raise AADError(1002012, "invalid_scope",
                       f"The provided value for scope {raw} is not valid. Client credential flows "
                       "must have a scope value with /.default suffixed to the resource identifier "
                       "(application ID URI).")
    resource = parts[0][: -len("/.default")].lower().rstrip("/")
    if resource not in scope_rules.RESOURCES:
        raise AADError(500011, "invalid_resource",
                       f"The resource principal named {resource} was not found in the tenant "
                       f"named {app.tenant.domain}. This can happen if the application has not "
                       "been installed by the administrator of the tenant or consented to by any "
                       "user in the tenant. You might have sent your authentication request to "
                       "the wrong tenant.")
    audience = scope_rules.RESOURCES[resource][1]
    tenant = route.tenant if route.kind == "tenant" and route.tenant else app.tenant
    lifetime = int(idp.access_token_lifetime)
    uti = b64url(secrets.token_bytes(16))
    claims = app_token_claims(app, tenant.tenant_id, audience, lifetime, uti)
    idp.access_tokens[uti] = IssuedAccessToken(uti, None, app.client_id, claims["exp"])
    return {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
            "access_token": idp.signer.sign(claims)}
