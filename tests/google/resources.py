"""What a token buys after the token endpoint: /revoke, /tokeninfo and /v1/userinfo.

- Revocation (web-server guide, "Revoking a token"): POST https://oauth2.googleapis.com/revoke
  with `token=` as form data (the query string works too). "The token can be an access token or
  a refresh token. If the token is an access token and it has a corresponding refresh token, the
  refresh token will also be revoked." 200 on success, 400 with an error code otherwise. Here a
  revocation ends the user's whole grant to the client, as "Remove access" does.
- tokeninfo (https://oauth2.googleapis.com/tokeninfo?access_token=...): azp, aud, sub, scope,
  exp, expires_in, email, email_verified, access_type, every value a string as Google sends
  them; an invalid or expired token is 400 {"error": "invalid_token", "error_description":
  "Invalid Value"}. Dovecot 2.3's oauth2 passdb checks Gmail-like XOAUTH2 logins against it.
- userinfo (OpenID Connect guide, "Obtaining user profile information"): claims by scope;
  a bad token is 401 with `WWW-Authenticate: Bearer ... error="invalid_token"`.
"""
from __future__ import annotations

import time
from typing import Any

import jwt

from . import scopes as scope_rules
from .errors import TokenError
from .model import AccessToken
from .server import GoogleProvider

INVALID_VALUE = TokenError("invalid_token", "Invalid Value")


def revoke(provider: GoogleProvider, token: str) -> AccessToken | None:
    """Ends the grant behind `token`; raises TokenError when there is nothing live to revoke.
    Returns the access token if one was named (for the request log's client id)."""
    if not token:
        raise TokenError("invalid_request", "Bad Request")
    store = provider.store
    with store.lock:
        access = store.live_access(token)
        refresh = store.refresh.get(token)
        if access is not None:
            store.revoke_grant(access.user, access.client)
            return access
        if refresh is not None and store.refresh_problem(refresh) is None:
            store.revoke_grant(refresh.user, refresh.client)
            return None
    raise TokenError("invalid_token", "Token expired or revoked")


def tokeninfo(provider: GoogleProvider, access_token: str | None,
              id_token: str | None) -> dict[str, str]:
    if id_token:
        return _id_tokeninfo(provider, id_token)
    access = provider.store.live_access(access_token or "")
    if access is None:
        raise INVALID_VALUE
    info = {"azp": access.client.client_id, "aud": access.client.client_id,
            "sub": access.user.sub, "scope": " ".join(access.scopes),
            "exp": str(int(access.expires)),
            "expires_in": str(max(0, int(access.expires - time.time())))}
    if scope_rules.EMAIL in access.scopes:
        info["email"] = access.user.email
        info["email_verified"] = "true" if access.user.email_verified else "false"
    info["access_type"] = access.access_type
    return info


def _id_tokeninfo(provider: GoogleProvider, id_token: str) -> dict[str, str]:
    try:
        claims = provider.signer.verify(id_token)
        header = jwt.get_unverified_header(id_token)
    except jwt.InvalidTokenError:
        raise INVALID_VALUE from None
    info = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in claims.items()}
    info.update(alg=header["alg"], kid=header["kid"], typ=header.get("typ", "JWT"))
    return info


def userinfo(provider: GoogleProvider, token: str) -> dict[str, Any] | None:
    access = provider.store.live_access(token)
    if access is None:
        return None
    user = access.user
    claims: dict[str, Any] = {"sub": user.sub}
    if scope_rules.PROFILE in access.scopes and user.name:
        claims.update(name=user.name, given_name=user.given_name,
                      family_name=user.family_name)
    if scope_rules.EMAIL in access.scopes:
        claims.update(email=user.email, email_verified=user.email_verified)
    if user.hd:
        claims["hd"] = user.hd
    return claims
