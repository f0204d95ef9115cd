"""Scope strings as Google's authorization server reads and words them.

Google expands the OpenID shorthands: a request for `email profile` comes back in the token
response's `scope` as the userinfo URLs (web-server guide, "Step 5: Exchange authorization code":
`scope` is "The scopes of access granted by the access_token expressed as a list of
space-delimited, case-sensitive strings"). The consent wording is Google's: the Gmail API scope
table (https://developers.google.com/gmail/api/auth/scopes) and the consent screen texts.
Sensitivity decides the unverified-app screen (https://support.google.com/cloud/answer/13463073).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal

OPENID = "openid"
EMAIL = "https://www.googleapis.com/auth/userinfo.email"
PROFILE = "https://www.googleapis.com/auth/userinfo.profile"
MAIL = "https://mail.google.com/"

Sensitivity = Literal["non-sensitive", "sensitive", "restricted"]


@dataclass(frozen=True)
class ScopeInfo:
    text: str  # the line on the consent screen
    sensitivity: Sensitivity


ALIASES = {"email": EMAIL, "profile": PROFILE}

SCOPES: dict[str, ScopeInfo] = {
    OPENID: ScopeInfo("Associate you with your personal info on Google", "non-sensitive"),
    EMAIL: ScopeInfo("See your primary Google Account email address", "non-sensitive"),
    PROFILE: ScopeInfo("See your personal info, including any personal info you've made "
                       "publicly available", "non-sensitive"),
    MAIL: ScopeInfo("Read, compose, send, and permanently delete all your email from Gmail",
                    "restricted"),
    "https://www.googleapis.com/auth/gmail.readonly": ScopeInfo(
        "View your email messages and settings", "restricted"),
    "https://www.googleapis.com/auth/gmail.modify": ScopeInfo(
        "Read, compose, and send emails from your Gmail account", "restricted"),
    "https://www.googleapis.com/auth/gmail.compose": ScopeInfo(
        "Manage drafts and send emails", "restricted"),
    "https://www.googleapis.com/auth/gmail.send": ScopeInfo(
        "Send email on your behalf", "sensitive"),
    "https://www.googleapis.com/auth/gmail.labels": ScopeInfo(
        "See and edit your email labels", "non-sensitive"),
}

# The sign-in scopes: always granted together, never a checkbox on the consent screen, and the
# only ones for which an External app in Testing gets a refresh token that does not expire in
# 7 days (https://developers.google.com/identity/protocols/oauth2#expiration).
SIGN_IN = frozenset({OPENID, EMAIL, PROFILE})


def canonical(scope: str) -> str:
    return ALIASES.get(scope, scope)


def parse(raw: str) -> tuple[list[str], list[str]]:
    """(known scopes in request order, canonical and deduplicated; unknown scopes as given)."""
    known: list[str] = []
    unknown: list[str] = []
    for item in raw.split():
        scope = canonical(item)
        if scope not in SCOPES:
            unknown.append(item)
        elif scope not in known:
            known.append(scope)
    return known, unknown


def needs_verification(scopes: Iterable[str]) -> bool:
    """Sensitive or restricted scopes: an unverified External app gets the warning screen."""
    return any(SCOPES[s].sensitivity != "non-sensitive" for s in scopes)


def has_gmail_scope(scopes: Iterable[str]) -> bool:
    """Gmail scopes die with a password change (oauth2#expiration)."""
    return any(s == MAIL or "/auth/gmail." in s for s in scopes)


def ordered(scopes: Iterable[str]) -> list[str]:
    """A stable order for the `scope` strings we return: Google's own order is not documented."""
    return sorted(set(scopes), key=lambda s: (s != MAIL, s))
