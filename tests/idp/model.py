"""Directory objects of the test identity provider: tenants, app registrations, users.

Kept as plain dataclasses so tests can read (and, between requests, tweak) them directly.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Literal

# The tenant ID Microsoft uses for every personal (MSA) account.
MSA_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"

Audience = Literal["single", "multi", "multi_personal", "personal"]
AUDIENCES: tuple[str, ...] = ("single", "multi", "multi_personal", "personal")

# What an app registration asks for by default (what `<resource>/.default` expands to).
DEFAULT_PERMISSIONS: tuple[str, ...] = (
    "https://outlook.office.com/IMAP.AccessAsUser.All",
    "https://outlook.office.com/SMTP.Send",
    "https://graph.microsoft.com/User.Read",
)


def new_guid() -> str:
    return str(uuid.uuid4())


@dataclass(eq=False)
class Tenant:
    tenant_id: str
    domain: str
    personal: bool = False  # the consumers (MSA) directory
    domains: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.domains.add(self.domain.lower())


@dataclass(eq=False)
class App:
    client_id: str
    tenant: Tenant  # home tenant of the registration
    secret: str | None
    redirect_uris: list[str]
    audience: str = "single"
    secret_expired: bool = False
    name: str = "Helpdesk connector"
    permissions: list[str] = field(default_factory=lambda: list(DEFAULT_PERMISSIONS))


@dataclass(eq=False)
class User:
    email: str
    password: str
    name: str
    tenant: Tenant
    oid: str = field(default_factory=new_guid)
    needs_admin_consent: bool = False
    mailboxes: set[str] = field(default_factory=set)  # Full Access to these (lower-case)
    send_as: set[str] = field(default_factory=set)  # "Send As" on these (lower-case)

    @property
    def given_name(self) -> str:
        return self.name.split(" ")[0]

    @property
    def family_name(self) -> str:
        parts = self.name.split(" ", 1)
        return parts[1] if len(parts) > 1 else ""
