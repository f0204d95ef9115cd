"""Directory and grant objects of the Google stand-in: OAuth clients, accounts, codes, tokens.

Plain dataclasses, so tests can read them (and, between requests, adjust them). Values are
shaped like Google's so that code handling them meets realistic input: client IDs end in
`.apps.googleusercontent.com`, secrets start `GOCSPX-`, codes `4/0A` (with a slash, which a
client must URL-encode), access tokens `ya29.`, refresh tokens `1//0`, `sub` is 21 digits.
The app must still treat every token as opaque.
"""
from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field
from typing import Literal

UserType = Literal["internal", "external"]
PublishingStatus = Literal["production", "testing"]

CODE_PREFIX = "4/0A"
ACCESS_PREFIX = "ya29.a0"
REFRESH_PREFIX = "1//0"


def _alnum(n: int, alphabet: str = string.ascii_lowercase + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def new_client_id() -> str:
    return f"{secrets.randbelow(9 * 10**11) + 10**11}-{_alnum(32)}.apps.googleusercontent.com"


def new_client_secret() -> str:
    return "GOCSPX-" + secrets.token_urlsafe(21)


def new_sub() -> str:
    return "1" + "".join(secrets.choice(string.digits) for _ in range(20))


def new_code() -> str:
    return CODE_PREFIX + secrets.token_urlsafe(54)


def new_access_token() -> str:
    return ACCESS_PREFIX + secrets.token_urlsafe(150)


def new_refresh_token() -> str:
    return REFRESH_PREFIX + _alnum(1) + secrets.token_urlsafe(76)


@dataclass(eq=False)
class Client:
    """An OAuth client ("Web application") with its project's consent-screen settings."""

    client_id: str
    secret: str
    redirect_uris: list[str]
    user_type: UserType = "internal"
    publishing_status: PublishingStatus = "production"
    domain: str | None = None  # the Workspace organization that owns an Internal app
    name: str = "Helpdesk connector"
    verified: bool = False  # passed Google's OAuth app verification
    test_users: set[str] = field(default_factory=set)  # lower-case emails (Testing only)
    support_email: str = "admin@example.com"

    @property
    def external(self) -> bool:
        return self.user_type == "external"

    @property
    def testing(self) -> bool:
        return self.external and self.publishing_status == "testing"


@dataclass(eq=False)
class User:
    """A Google Account: a Workspace user when `hd` is set, else a consumer (gmail.com) one."""

    email: str
    password: str
    hd: str | None = None
    name: str = ""
    sub: str = field(default_factory=new_sub)
    email_verified: bool = True

    @property
    def given_name(self) -> str:
        return self.name.split(" ")[0]

    @property
    def family_name(self) -> str:
        parts = self.name.split(" ", 1)
        return parts[1] if len(parts) > 1 else ""


@dataclass(eq=False)
class Consent:
    """What a user granted one client (Google shows it under "Third-party apps")."""

    scopes: set[str] = field(default_factory=set)
    offline: bool = False


@dataclass(eq=False)
class AuthCode:
    code: str
    client: Client
    user: User
    scopes: list[str]
    redirect_uri: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str
    access_type: str
    issue_refresh: bool
    issued: float
    used: bool = False


@dataclass(eq=False)
class RefreshToken:
    token: str
    client: Client
    user: User
    scopes: list[str]
    issued: float
    last_used: float
    expires: float | None = None  # only for External apps in Testing (7 days)
    dead: str | None = None  # why it stopped working: "revoked", "password", "limit", ...


@dataclass(eq=False)
class AccessToken:
    token: str
    client: Client
    user: User
    scopes: list[str]
    expires: float
    access_type: str
    refresh: RefreshToken | None = None
    revoked: bool = False
