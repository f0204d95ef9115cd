"""What a finished Google sign-in must contain, and the tokens kept per mailbox (`GoogleTokens`).

A mailbox's tokens are a JSON object, encrypted per mailbox in `Account.token_cache_enc`.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from .errors import Explained
from .microsoft import IdentityError

MAIL_SCOPE = "https://mail.google.com/"

DECLINED_GMAIL = ("You did not tick \"Read, compose, send, and permanently delete all your email from Gmail\" on "
                  "Google's consent screen, so connector could not read the mailbox over IMAP and nothing was "
                  "connected: click \"Connect Google\" again and tick it.")
NO_REFRESH_TOKEN = ("Google sent no refresh token, so connector would lose the mailbox within the hour, and nothing "
                    "was connected: remove the app's access in the Google Account (Security > Your connections to "
                    "third-party apps & services), then click \"Connect Google\" again.")
NO_ID_TOKEN = ("Google did not say who signed in (no ID token in its answer), so nothing was connected: click "
               "\"Connect Google\" again; if it persists, check [google] authority.")
UNVERIFIED_EMAIL = ("Google says the address {email} of this account is not verified, so it cannot name a "
                    "mailbox and nothing was connected: verify it in the Google Account, or sign in with a Gmail "
                    "or Google Workspace address.")
UNREADABLE_TOKENS = ("The mailbox's stored Google sign-in cannot be read (it was written by another version or "
                     "damaged): reconnect the mailbox.")


class GoogleTokenError(IdentityError):
    """A refused token request; `error` is Google's code, `reason` ours (see google_errors.refresh_refused)."""

    def __init__(self, explained: Explained, error: str = "", reason: str = "transient") -> None:
        super().__init__(explained)
        self.error = error
        self.reason = reason


@dataclass(frozen=True)
class GoogleTokens:
    """What is stored per mailbox. Times are Unix seconds.

    `issued_at` is when the refresh token came (the sign-in), `refreshed_at` the last refresh Google
    accepted: together they tell a token that died at 7 days (an app in Testing) from a revoked one.
    """
    refresh_token: str
    access_token: str
    expires_at: float
    scope: str
    issued_at: float
    refreshed_at: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "GoogleTokens":
        """Raises ValueError for anything that is not a complete token JSON."""
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("refresh_token"), str) or not data["refresh_token"]:
            raise ValueError("no refresh token")
        refreshed = data.get("refreshed_at")
        return cls(refresh_token=data["refresh_token"], access_token=str(data.get("access_token") or ""),
                   expires_at=float(data.get("expires_at") or 0), scope=str(data.get("scope") or ""),
                   issued_at=float(data.get("issued_at") or 0),
                   refreshed_at=float(refreshed) if refreshed is not None else None)


@dataclass(frozen=True)
class GoogleSignIn:
    """A finished, verified sign-in. `subject` (the ID token's `sub`) is the Google Account for good;
    the address can be renamed or reused, `hosted_domain` is the Workspace domain (`hd`, empty for
    a consumer account)."""
    email: str
    subject: str
    hosted_domain: str
    name: str
    tokens: GoogleTokens


def signed_in(token: dict, *, now: float | None = None) -> GoogleSignIn:
    """The mailbox a verified token response stands for (`token["userinfo"]`: the ID token's
    claims, verified by authlib). Raises IdentityError with the sentence for a person."""
    claims = token.get("userinfo")
    if not isinstance(claims, dict) or not claims.get("sub"):
        raise IdentityError(Explained(NO_ID_TOKEN))
    granted = str(token.get("scope", "")).split()
    if "scope" in token and MAIL_SCOPE not in granted:
        raise IdentityError(Explained(DECLINED_GMAIL))
    email = str(claims.get("email") or "").strip().lower()
    if not email:
        raise IdentityError(Explained("Google did not say which address signed in (no email in the ID token), "
                                      "so nothing was connected: check that the app asks for the \"email\" "
                                      "scope, then click \"Connect Google\" again."))
    if claims.get("email_verified") not in (True, "true"):
        raise IdentityError(Explained(UNVERIFIED_EMAIL.format(email=email)))
    refresh_token = token.get("refresh_token")
    if not refresh_token:
        raise IdentityError(Explained(NO_REFRESH_TOKEN))
    now = time.time() if now is None else now
    tokens = GoogleTokens(refresh_token=str(refresh_token), access_token=str(token.get("access_token") or ""),
                          expires_at=now + _seconds(token.get("expires_in")), scope=" ".join(granted),
                          issued_at=now)
    return GoogleSignIn(email=email, subject=str(claims["sub"]), hosted_domain=str(claims.get("hd") or ""),
                        name=str(claims.get("name") or ""), tokens=tokens)


def _seconds(value: Any) -> float:
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return 0.0


def after_refresh(tokens: GoogleTokens, answer: dict, now: float) -> GoogleTokens:
    """The tokens to store after Google answered a refresh. Raises GoogleTokenError for an answer that
    cannot be used (no access token, or the Gmail scope no longer granted)."""
    access_token = answer.get("access_token")
    if not access_token:
        raise GoogleTokenError(Explained("Google answered the token refresh without an access token: try "
                                         "again later."))
    scope = str(answer.get("scope") or tokens.scope)
    if MAIL_SCOPE not in scope.split():
        raise GoogleTokenError(Explained("Google no longer grants Gmail access (https://mail.google.com/) to "
                                         "this mailbox's sign-in: reconnect it and tick the Gmail permission.",
                                         None, True), reason="scope")
    new_refresh = answer.get("refresh_token") or tokens.refresh_token
    rotated = new_refresh != tokens.refresh_token  # Google keeps refresh tokens; keep a new one if it comes
    return replace(tokens, refresh_token=str(new_refresh), access_token=str(access_token),
                   expires_at=now + _seconds(answer.get("expires_in")), scope=scope,
                   issued_at=now if rotated else tokens.issued_at, refreshed_at=now)
