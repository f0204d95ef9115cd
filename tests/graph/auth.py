"""Bearer tokens as Microsoft Graph checks them: signature against the identity provider's JWKS,
audience, issuer, lifetime; then who is calling and with which permissions.

https://learn.microsoft.com/graph/auth/auth-concepts and /graph/resolve-auth-errors: every
failure is 401 InvalidAuthenticationToken with a WWW-Authenticate challenge naming the authority.
The JWKS is fetched over HTTPS from the IdP (trusting the test CA), like a resource server would.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import jwt
import requests

from . import errors
from .clock import Clock

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
GRAPH_AUDIENCES = ("https://graph.microsoft.com", "https://graph.microsoft.com/", GRAPH_APP_ID)
CLOCK_SKEW = 300  # seconds of nbf/exp tolerance, as Microsoft's validators allow


@dataclass(frozen=True)
class Caller:
    """A validated token: app, tenant, signed-in user (None for app-only) and permissions."""

    claims: dict[str, Any]
    app_id: str
    tenant_id: str
    user: Any | None  # tests.idp.User
    scopes: frozenset[str]  # delegated, lower-case
    roles: frozenset[str]  # application, lower-case

    @property
    def is_app(self) -> bool:
        return self.claims.get("idtyp") == "app" or "scp" not in self.claims

    @property
    def email(self) -> str | None:
        return self.user.email.lower() if self.user is not None else None

    @property
    def oid(self) -> str | None:
        return self.user.oid if self.user is not None else None

    def has_any(self, *permissions: str) -> bool:
        granted = self.roles if self.is_app else self.scopes
        return any(p.lower() in granted for p in permissions)


class TokenVerifier:
    def __init__(self, idp: Any, ca_path: str, clock: Clock) -> None:
        self.idp = idp
        self.ca_path = ca_path
        self.clock = clock
        self.enforce_revocation = False  # CAE-style: revoked sessions fail at once
        self._keys: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def challenge(self) -> str:
        return (f'Bearer realm="", authorization_uri="{self.idp.url}/common/oauth2/authorize", '
                f'client_id="{GRAPH_APP_ID}"')

    def _fail(self, message: str) -> errors.GraphError:
        return errors.invalid_token(message, self.challenge)

    def _key(self, kid: str) -> Any:
        with self._lock:
            if kid not in self._keys:
                with requests.Session() as http:
                    http.trust_env = False
                    http.verify = self.ca_path
                    document = http.get(f"{self.idp.url}/common/discovery/v2.0/keys",
                                        timeout=10).json()
                for entry in document.get("keys", []):
                    self._keys[entry["kid"]] = jwt.PyJWK.from_dict(entry).key
            return self._keys.get(kid)

    def verify(self, authorization: str | None) -> Caller:
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise self._fail("Access token is empty.")
        if token.count(".") != 2:
            raise self._fail("CompactToken parsing failed with error code: 80049217")
        try:
            header = jwt.get_unverified_header(token)
            key = self._key(str(header.get("kid", "")))
            if key is None:
                raise jwt.InvalidSignatureError("unknown kid")
            claims = jwt.decode(token, key, algorithms=["RS256"],
                                options={"verify_aud": False, "verify_exp": False,
                                         "verify_nbf": False, "verify_iat": False})
        except (jwt.InvalidTokenError, ValueError):
            raise self._fail("Access token validation failure.") from None
        return self._check(claims)

    def _check(self, claims: dict[str, Any]) -> Caller:
        now = self.clock.time()
        if claims.get("aud") not in GRAPH_AUDIENCES:
            raise self._fail("Access token validation failure. Invalid audience.")
        if not isinstance(claims.get("exp"), (int, float)) or claims["exp"] + CLOCK_SKEW < now:
            raise self._fail("Lifetime validation failed, the token is expired.")
        if isinstance(claims.get("nbf"), (int, float)) and claims["nbf"] - CLOCK_SKEW > now:
            raise self._fail("Lifetime validation failed, the token is not yet valid.")
        tid = str(claims.get("tid", ""))
        issuers = (f"https://sts.windows.net/{tid}/", f"{self.idp.url}/{tid}/v2.0")
        if claims.get("iss") not in issuers or self.idp.resolve(tid) is None:
            raise self._fail("Access token validation failure. Invalid issuer.")
        if self.enforce_revocation:
            issued = self.idp.access_tokens.get(claims.get("uti", ""))
            if issued is None or not issued.active:
                raise self._fail("Continuous access evaluation resulted in challenge with result: "
                                 "InteractionRequired and code: TokenIssuedBeforeRevocationTimestamp")
        user = None
        if claims.get("idtyp") != "app" and "scp" in claims:
            user = self.idp.users.get(str(claims.get("upn", "")).lower())
            if user is None or user.oid != claims.get("oid"):
                raise self._fail("Access token validation failure. The user no longer exists.")
        return Caller(claims, str(claims.get("appid") or claims.get("azp") or ""), tid, user,
                      frozenset(s.lower() for s in str(claims.get("scp", "")).split()),
                      frozenset(r.lower() for r in claims.get("roles") or []))
