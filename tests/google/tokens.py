"""Signing keys, the JWKS document and ID tokens, as Google publishes them.

Google signs ID tokens with RS256 and rotates its keys, publishing the current and the previous
key at the `jwks_uri` (OpenID Connect guide, "Validating an ID token": keys rotate, so clients
must not hard-code them and must refetch on an unknown `kid`). `rotate()` does that here.
ID token claims follow the OpenID Connect guide's "An ID token's payload" table
(https://developers.google.com/identity/openid-connect/openid-connect#an-id-tokens-payload).
"""
from __future__ import annotations

import base64
import hashlib
import secrets
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from . import scopes as scope_rules
from .model import Client, User

ID_TOKEN_LIFETIME = 3600


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_int(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


class _Key:
    def __init__(self) -> None:
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = secrets.token_hex(20)  # Google's kids are 40 hex digits

    def jwk(self) -> dict[str, Any]:
        numbers = self.private.public_key().public_numbers()
        return {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid,
                "n": _b64url_int(numbers.n), "e": _b64url_int(numbers.e)}


class Signer:
    """The current signing key plus the previous one (still published after a rotation)."""

    def __init__(self) -> None:
        self.current = _Key()
        self.previous: _Key | None = None

    def rotate(self) -> str:
        """Sign with a new key from now on; the old one stays in the JWKS. Returns the new kid."""
        self.previous, self.current = self.current, _Key()
        return self.current.kid

    def jwks(self) -> dict[str, Any]:
        keys = [self.current.jwk()] + ([self.previous.jwk()] if self.previous else [])
        return {"keys": keys}

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.current.private, algorithm="RS256",
                          headers={"kid": self.current.kid, "typ": "JWT"})

    def verify(self, token: str, audience: str | None = None) -> dict[str, Any]:
        """Claims of an ID token we signed (either key); raises jwt.InvalidTokenError."""
        kid = jwt.get_unverified_header(token).get("kid")
        key = next((k for k in (self.current, self.previous) if k and k.kid == kid), None)
        if key is None:
            raise jwt.InvalidTokenError("unknown kid")
        return jwt.decode(token, key.private.public_key(), algorithms=["RS256"],
                          audience=audience, options={"verify_aud": audience is not None})


def at_hash(access_token: str) -> str:
    """OpenID Connect Core 3.1.3.6: left half of SHA-256 of the access token, base64url."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return b64url(digest[: len(digest) // 2])


def id_token_claims(issuer: str, client: Client, user: User, granted: list[str],
                    access_token: str, nonce: str | None) -> dict[str, Any]:
    """`email`/`email_verified` only with the email scope, names only with profile; `hd` only
    for Workspace accounts (the guide: "absence ... indicates the account does not belong to a
    Google hosted domain")."""
    now = int(time.time())
    claims: dict[str, Any] = {"iss": issuer, "azp": client.client_id, "aud": client.client_id,
                              "sub": user.sub}
    if user.hd:
        claims["hd"] = user.hd
    if scope_rules.EMAIL in granted:
        claims["email"] = user.email
        claims["email_verified"] = user.email_verified
    claims["at_hash"] = at_hash(access_token)
    if nonce:
        claims["nonce"] = nonce
    if scope_rules.PROFILE in granted and user.name:
        claims.update(name=user.name, given_name=user.given_name, family_name=user.family_name)
    claims.update(iat=now, exp=now + ID_TOKEN_LIFETIME)
    return claims
