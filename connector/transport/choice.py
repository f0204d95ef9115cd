"""Which transport a mailbox uses, what it must consent to, and the way out of a dead end.

- "imap": IMAP + SMTP AUTH with `IMAP.AccessAsUser.All` and `SMTP.Send` (Office 365 Exchange Online);
- "graph": Microsoft Graph with `Mail.ReadWrite` + `Mail.Send`, or for a delegate's shared mailbox
  `Mail.ReadWrite.Shared` + `Mail.Send.Shared` (https://learn.microsoft.com/graph/permissions-reference).

New mailboxes get the admin's default (`app_settings` "default_transport"); the connect form may choose.
A mailbox whose IMAP or SMTP sign-in is refused although its token is fresh (`535 5.7.139`: SMTP AUTH
off; an IMAP login refused: IMAP off for the mailbox or tenant) is offered a one-click switch to Graph.
"""
from __future__ import annotations

from sqlalchemy.orm import Session

from ..identity.microsoft import CONNECT_SCOPES
from ..models import AppSetting, utcnow
from ..tokens import GRAPH_SHARED_SCOPES, PURPOSES

TRANSPORTS = {"imap": "IMAP and SMTP", "graph": "Microsoft Graph"}
DEFAULT_KEY = "default_transport"
OIDC = ["email"]  # msal adds offline_access, openid and profile itself

# What the admin adds to the app registration in Azure for the Graph transport (delegated).
GRAPH_PERMISSIONS = [
    ("Microsoft Graph", "Mail.ReadWrite", "Read and write access to user mail", "own mailboxes over Graph"),
    ("Microsoft Graph", "Mail.Send", "Send mail as a user", "own mailboxes over Graph"),
    ("Microsoft Graph", "Mail.ReadWrite.Shared", "Read and write user and shared mail",
     "shared mailboxes over Graph"),
    ("Microsoft Graph", "Mail.Send.Shared", "Send mail on behalf of others", "shared mailboxes over Graph"),
]

# The dead ends: the server refused a token that identity accepted moments before.
SMTP_AUTH_OFF = "5.7.139"
IMAP_REFUSED = "The IMAP server refused the sign-in"
WAY_OUT = (" Microsoft Graph works where IMAP or SMTP AUTH is switched off: switch this mailbox to Microsoft "
           "Graph (one click on the Mailboxes page; it asks for a new consent if needed).")


def valid(transport: str | None) -> str | None:
    value = (transport or "").strip().lower()
    return value if value in TRANSPORTS else None


def default_transport(session: Session) -> str:
    row = session.get(AppSetting, DEFAULT_KEY)
    return valid(row.value if row else None) or "imap"


def set_default_transport(session: Session, transport: str, by: str) -> None:
    value = valid(transport)
    if value is None:
        raise ValueError(f"unknown transport {transport!r}")
    row = session.get(AppSetting, DEFAULT_KEY)
    if row is None:
        session.add(AppSetting(key=DEFAULT_KEY, value=value, updated_by=by, updated_at=utcnow()))
    else:
        row.value, row.updated_by, row.updated_at = value, by, utcnow()


def connect_scopes(transport: str, shared: bool) -> list[str]:
    """What the sign-in asks for: the transport's permissions (one resource per token) and email."""
    if transport == "graph":
        return (GRAPH_SHARED_SCOPES if shared else PURPOSES["graph"]) + OIDC
    return list(CONNECT_SCOPES)


def token_purpose(transport: str, shared: bool) -> str:
    if transport == "graph":
        return "graph_shared" if shared else "graph"
    return "mail"


def is_dead_end(message: str | None) -> bool:
    """An IMAP/SMTP refusal that Graph gets around (the token itself was fine)."""
    text = message or ""
    return SMTP_AUTH_OFF in text or IMAP_REFUSED in text


def with_way_out(message: str) -> str:
    return message if WAY_OUT.strip() in message else message + WAY_OUT
