"""Signing key, JWKS and the JWTs the identity provider issues.

Access tokens copy the shape of Exchange Online's (v1.0 tokens, aud https://outlook.office.com,
~1.5 KB) so that size-sensitive code paths (SASL lines, headers) meet realistic input; the app must
still treat them as opaque. ID tokens are v2.0 as Microsoft issues them.
"""
from __future__ import annotations

import base64
import datetime
import hashlib
import json
import secrets
import time
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from .model import App, User


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_int(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


class Signer:
    """One RS256 key, published as a JWKS entry with kid, x5t and a self-signed x5c."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = datetime.datetime.now(datetime.timezone.utc)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "accounts.accesscontrol.test")])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=365))
                .sign(self.key, hashes.SHA256()))
        der = cert.public_bytes(serialization.Encoding.DER)
        self.x5c = base64.b64encode(der).decode("ascii")
        self.kid = b64url(hashlib.sha1(der).digest())  # Microsoft: kid == x5t
        self.public_key = self.key.public_key()

    def jwk(self, issuer: str | None = None) -> dict[str, Any]:
        numbers = self.public_key.public_numbers()
        jwk = {"kty": "RSA", "use": "sig", "kid": self.kid, "x5t": self.kid,
               "n": _b64url_int(numbers.n), "e": _b64url_int(numbers.e), "x5c": [self.x5c]}
        if issuer:
            jwk["issuer"] = issuer
        return jwk

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.key, algorithm="RS256",
                          headers={"typ": "JWT", "kid": self.kid, "x5t": self.kid})

    def verify(self, token: str) -> dict[str, Any]:
        """Claims of a token we signed; raises jwt.InvalidTokenError (incl. expired)."""
        return jwt.decode(token, self.public_key, algorithms=["RS256"],
                          options={"verify_aud": False, "require": ["exp", "iat"]})


def pairwise_sub(user: User, app_client_id: str) -> str:
    """Microsoft's `sub` differs per app for the same user."""
    return b64url(hashlib.sha256(f"{user.oid}|{app_client_id}".encode()).digest())


def client_info(user: User) -> str:
    """base64url JSON {"uid", "utid"}: msal builds the home_account_id from it."""
    return b64url(json.dumps({"uid": user.oid, "utid": user.tenant.tenant_id},
                             separators=(",", ":")).encode())


def access_token_claims(user: User, app: App, audience: str, scp: str, lifetime: int,
                        uti: str) -> dict[str, Any]:
    now = int(time.time())
    tid = user.tenant.tenant_id
    return {
        "aud": audience,
        "iss": f"https://sts.windows.net/{tid}/",
        "iat": now, "nbf": now, "exp": now + lifetime,
        "acct": 0, "acr": "1",
        "aio": b64url(secrets.token_bytes(60)),
        "amr": ["pwd"],
        "app_displayname": app.name,
        "appid": app.client_id,
        "appidacr": "1",
        "enfpolicyids": [],
        "family_name": user.family_name,
        "given_name": user.given_name,
        "idtyp": "user",
        "ipaddr": "127.0.0.1",
        "name": user.name,
        "oid": user.oid,
        "puid": secrets.token_hex(8).upper(),
        "rh": "1.A" + b64url(secrets.token_bytes(40)) + ".",
        "scp": scp,
        "sid": secrets.token_hex(4) + "-" + secrets.token_hex(2) + "-" + secrets.token_hex(2)
               + "-" + secrets.token_hex(2) + "-" + secrets.token_hex(6),
        "signin_state": ["kmsi"],
        "sub": pairwise_sub(user, app.client_id),
        "tid": tid,
        "unique_name": user.email,
        "upn": user.email,
        "uti": uti,
        "ver": "1.0",
        "wids": ["b79fbf4d-3ef9-4689-8143-76b194e85509"],
        "xms_idrel": "1 20",
        "xms_st": {"sub": b64url(secrets.token_bytes(32))},
        "xms_tcdt": now - 86400 * 400,
    }


def app_token_claims(app: App, tenant_id: str, audience: str, lifetime: int,
                     uti: str) -> dict[str, Any]:
    """Client-credentials token: no user, `roles` instead of `scp`."""
    now = int(time.time())
    return {
        "aud": audience, "iss": f"https://sts.windows.net/{tenant_id}/",
        "iat": now, "nbf": now, "exp": now + lifetime,
        "aio": b64url(secrets.token_bytes(48)),
        "app_displayname": app.name, "appid": app.client_id, "appidacr": "1",
        "idp": f"https://sts.windows.net/{tenant_id}/", "idtyp": "app",
        "oid": app.client_id, "roles": [], "sub": app.client_id, "tid": tenant_id,
        "uti": uti, "ver": "1.0",
    }


def id_token_claims(user: User, app: App, issuer: str, nonce: str | None,
                    auth_time: int | None = None) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "aud": app.client_id, "iss": issuer, "iat": now, "nbf": now, "exp": now + 3600,
        "aio": b64url(secrets.token_bytes(48)),
        "name": user.name,
        "oid": user.oid,
        "preferred_username": user.email,
        "email": user.email,
        "rh": "1.A" + b64url(secrets.token_bytes(40)) + ".",
        "sub": pairwise_sub(user, app.client_id),
        "tid": user.tenant.tenant_id,
        "uti": b64url(secrets.token_bytes(16)),
        "ver": "2.0",
    }
    if nonce:
        claims["nonce"] = nonce
    if auth_time is not None:
        claims["auth_time"] = auth_time
    return claims
