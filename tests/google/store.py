"""Consents, codes and tokens, and the rules by which Google's refresh tokens stop working.

From "Refresh token expiration" (https://developers.google.com/identity/protocols/oauth2#expiration):
a refresh token stops working when the user revokes the app's access, when it has not been used
for six months, when the user changes their password and the token has Gmail scopes, when the
user has more than 100 live refresh tokens for one client (the oldest dies without warning), and
an External app in "Testing" gets refresh tokens that expire in 7 days unless it asked only for
name, email and profile. Google does not rotate refresh tokens: the same one keeps working.
Every death answers `invalid_grant` "Token has been expired or revoked." at the token endpoint.
"""
from __future__ import annotations

import threading
import time
from typing import Iterable

from . import scopes as scope_rules
from .model import (AccessToken, AuthCode, Client, Consent, RefreshToken, User,
                    new_access_token, new_code, new_refresh_token)

DAY = 86400
TESTING_REFRESH_LIFETIME = 7 * DAY
DISUSE_LIMIT = 183 * DAY  # "has not been used for six months"
REFRESH_TOKENS_PER_CLIENT = 100
ACCESS_TOKEN_LIFETIME = 3599  # what Google's token responses say in `expires_in`


class TokenStore:
    """All grant state, behind one lock (the server is threaded)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.access_token_lifetime = ACCESS_TOKEN_LIFETIME
        self.consents: dict[tuple[str, str], Consent] = {}  # (sub, client_id)
        self.codes: dict[str, AuthCode] = {}
        self.access: dict[str, AccessToken] = {}
        self.refresh: dict[str, RefreshToken] = {}

    # ---- consent -------------------------------------------------------------------------

    def consent(self, user: User, client: Client) -> Consent | None:
        with self.lock:
            return self.consents.get((user.sub, client.client_id))

    def record_consent(self, user: User, client: Client, scopes: Iterable[str],
                       offline: bool) -> Consent:
        with self.lock:
            consent = self.consents.setdefault((user.sub, client.client_id), Consent())
            consent.scopes.update(scopes)
            consent.offline = consent.offline or offline
            return consent

    # ---- issuing -------------------------------------------------------------------------

    def new_code(self, **fields: object) -> AuthCode:
        with self.lock:
            code = AuthCode(code=new_code(), issued=time.time(), **fields)  # type: ignore[arg-type]
            self.codes[code.code] = code
            return code

    def issue(self, client: Client, user: User, scopes: list[str], access_type: str,
              refresh: RefreshToken | None = None, new_refresh: bool = False
              ) -> tuple[AccessToken, RefreshToken | None]:
        """An access token (tied to `refresh` when it comes from one) and maybe a new refresh
        token; the 101st live refresh token of a user and client kills the oldest."""
        with self.lock:
            now = time.time()
            if new_refresh:
                expires = (now + TESTING_REFRESH_LIFETIME
                           if client.testing and not set(scopes) <= scope_rules.SIGN_IN else None)
                refresh = RefreshToken(new_refresh_token(), client, user, list(scopes), now, now,
                                       expires)
                self.refresh[refresh.token] = refresh
                self._enforce_limit(client, user)
            access = AccessToken(new_access_token(), client, user, list(scopes),
                                 now + self.access_token_lifetime, access_type, refresh)
            self.access[access.token] = access
            return access, refresh if new_refresh else None

    def _enforce_limit(self, client: Client, user: User) -> None:
        live = sorted((t for t in self.refresh.values() if t.client is client and t.user is user
                       and self.refresh_problem(t) is None), key=lambda t: t.issued)
        for old in live[: max(0, len(live) - REFRESH_TOKENS_PER_CLIENT)]:
            self._kill(old, "limit")

    # ---- state ---------------------------------------------------------------------------

    def refresh_problem(self, token: RefreshToken) -> str | None:
        """Why this refresh token no longer works, or None."""
        now = time.time()
        if token.dead:
            return token.dead
        if token.expires is not None and now >= token.expires:
            return "testing-expired"
        if now - token.last_used > DISUSE_LIMIT:
            return "disuse"
        return None

    def live_access(self, token: str) -> AccessToken | None:
        with self.lock:
            found = self.access.get(token)
            if found is None or found.revoked or time.time() >= found.expires:
                return None
            if found.refresh is not None and self.refresh_problem(found.refresh) is not None:
                return None
            return found

    # ---- ending --------------------------------------------------------------------------

    def _kill(self, token: RefreshToken, reason: str) -> None:
        token.dead = token.dead or reason
        for access in self.access.values():
            if access.refresh is token:
                access.revoked = True

    def revoke_grant(self, user: User, client: Client) -> int:
        """What /revoke and "Remove access" in the Google Account do: every token of this user
        and client dies and the consent is forgotten. Returns how many tokens died."""
        with self.lock:
            count = 0
            for token in self.refresh.values():
                if token.user is user and token.client is client and not token.dead:
                    self._kill(token, "revoked")
                    count += 1
            for access in self.access.values():
                if access.user is user and access.client is client and not access.revoked:
                    access.revoked = True
                    count += 1
            self.consents.pop((user.sub, client.client_id), None)
            return count

    def password_changed(self, user: User) -> None:
        with self.lock:
            for token in self.refresh.values():
                if token.user is user and scope_rules.has_gmail_scope(token.scopes):
                    self._kill(token, "password")
            for access in self.access.values():
                if access.user is user and scope_rules.has_gmail_scope(access.scopes):
                    access.revoked = True

    def kill_where(self, reason: str, user: User | None = None,
                   client: Client | None = None) -> None:
        with self.lock:
            for token in self.refresh.values():
                if (user is None or token.user is user) and (client is None
                                                             or token.client is client):
                    self._kill(token, reason)

    def age(self, seconds: float, user: User | None = None, client: Client | None = None) -> int:
        """Move refresh tokens `seconds` into the past (issue, last use, expiry)."""
        with self.lock:
            count = 0
            for token in self.refresh.values():
                if (user is None or token.user is user) and (client is None
                                                             or token.client is client):
                    token.issued -= seconds
                    token.last_used -= seconds
                    if token.expires is not None:
                        token.expires -= seconds
                    count += 1
            return count

    def expire_access(self, user: User | None = None) -> None:
        with self.lock:
            for access in self.access.values():
                if user is None or access.user is user:
                    access.expires = min(access.expires, time.time() - 1)
