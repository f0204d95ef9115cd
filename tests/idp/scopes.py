"""Scope strings as the Microsoft identity platform reads them.

One access token is for one resource (AADSTS28000 otherwise); OpenID scopes ride along with any
resource; a bare name like `User.Read` means Microsoft Graph; `<resource>/.default` means "what
the app registration lists for that resource".
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import AADError

OIDC_SCOPES = ("openid", "profile", "email", "offline_access")
GRAPH = "https://graph.microsoft.com"
OUTLOOK = "https://outlook.office.com"

# Canonical resource -> (display name, token audience). outlook.office365.com is an alias.
RESOURCES: dict[str, tuple[str, str]] = {
    OUTLOOK: ("Office 365 Exchange Online", OUTLOOK),
    "https://outlook.office365.com": ("Office 365 Exchange Online", OUTLOOK),
    GRAPH: ("Microsoft Graph", GRAPH),
}

# Wording of Microsoft's consent page, by permission name (lower-case).
CONSENT_TEXT: dict[str, str] = {
    "openid": "Sign you in and read your profile",
    "user.read": "Sign you in and read your profile",
    "profile": "View your basic profile",
    "email": "View your email address",
    "offline_access": "Maintain access to data you have given it access to",
    "imap.accessasuser.all": "Read and write access to mailboxes via IMAP",
    "pop.accessasuser.all": "Read and write access to mailboxes via POP",
    "smtp.send": "Send emails from mailboxes using SMTP AUTH",
    "ews.accessasuser.all": "Access mailboxes as the signed-in user via Exchange Web Services",
    "mail.read": "Read your mail",
    "mail.readwrite": "Read and write access to your mail",
    "mail.send": "Send mail as you",
}


def resource_of(scope: str) -> tuple[str, str] | None:
    """(canonical resource, permission) of a resource scope, None for an OpenID scope."""
    if scope.lower() in OIDC_SCOPES:
        return None
    if "/" not in scope:
        return GRAPH, scope
    resource, _, perm = scope.rpartition("/")
    return resource.lower().rstrip("/"), perm


def key(scope: str) -> str:
    """Case-insensitive identity of a scope, for consent bookkeeping."""
    parsed = resource_of(scope)
    if parsed is None:
        return scope.lower()
    resource, perm = parsed
    audience = RESOURCES.get(resource, (None, resource))[1]
    return f"{audience}/{perm.lower()}"


@dataclass
class ScopeRequest:
    """A parsed `scope` parameter."""

    oidc: list[str] = field(default_factory=list)
    by_resource: dict[str, list[str]] = field(default_factory=dict)  # audience -> full scopes

    @property
    def resource_scopes(self) -> list[str]:
        return [s for scopes in self.by_resource.values() for s in scopes]

    @property
    def all(self) -> list[str]:
        return self.oidc + self.resource_scopes

    def single_resource(self, raw: str) -> tuple[str, list[str]]:
        """The one resource a token can be for (Graph for OpenID-only requests)."""
        if len(self.by_resource) > 1:
            raise AADError(
                28000, "invalid_scope",
                "Provided value for the input parameter scope is not valid because it contains "
                f"more than one resource. Scope {raw} is not valid.")
        if not self.by_resource:
            return GRAPH, []
        return next(iter(self.by_resource.items()))


def parse(raw: str | None, permissions: list[str]) -> ScopeRequest:
    """Parse and validate a scope string; `.default` expands to `permissions`."""
    request = ScopeRequest()
    for scope in (raw or "").split():
        parsed = resource_of(scope)
        if parsed is None:
            if scope.lower() not in request.oidc:
                request.oidc.append(scope.lower())
            continue
        resource, perm = parsed
        if resource not in RESOURCES:
            raise AADError(
                500011, "invalid_resource",
                f"The resource principal named {resource} was not found in the tenant. This can "
                "happen if the application has not been installed by the administrator of the "
                "tenant or consented to by any user in the tenant.")
        if not perm:
            raise AADError(70011, "invalid_scope",
                           f"The provided value for the input parameter 'scope' is not valid. "
                           f"The scope {scope} is not valid.")
        audience = RESOURCES[resource][1]
        wanted = [p for p in permissions if key(p).startswith(audience + "/")] \
            if perm == ".default" else [scope]
        bucket = request.by_resource.setdefault(audience, [])
        for item in wanted:
            if key(item) not in {key(s) for s in bucket}:
                bucket.append(item)
    return request


def consent_lines(scopes: list[str]) -> list[str]:
    """Human wording of the permissions, deduplicated, in request order."""
    lines: list[str] = []
    for scope in scopes:
        parsed = resource_of(scope)
        if parsed is None:
            text = CONSENT_TEXT.get(scope.lower(), scope)
        else:
            resource, perm = parsed
            text = CONSENT_TEXT.get(perm.lower()) or \
                f"Access {RESOURCES.get(resource, (resource,))[0]} ({perm})"
        if text not in lines:
            lines.append(text)
    return lines
