"""Microsoft Graph's error answers as sentences for people, each naming the problem and the fix.

Graph answers errors as `{"error": {"code", "message", "innerError": {...}}}`
(https://learn.microsoft.com/graph/errors). People never see that raw: `explain()` turns the status
and code into a `GraphError` whose `message` says what happened to which mailbox and what to do,
with the code in brackets so an admin can look it up. The flags tell the caller how to go on:
`retry_after` (back off this mailbox only), `permanent` (retrying without a change cannot help),
`reconnect` (the grant is gone or lacks a permission: sign in again), `auth` (a sign-in problem).
"""
from __future__ import annotations

from dataclasses import dataclass, field

# The delegated permissions the transport uses, per mailbox kind and operation
# (https://learn.microsoft.com/graph/permissions-reference#mail-permissions).
OWN_PERMISSIONS = {"read": "Mail.ReadWrite", "write": "Mail.ReadWrite", "send": "Mail.Send",
                   "subscribe": "Mail.ReadWrite"}
SHARED_PERMISSIONS = {"read": "Mail.ReadWrite.Shared", "write": "Mail.ReadWrite.Shared",
                      "send": "Mail.Send.Shared", "subscribe": "Mail.ReadWrite.Shared"}
# A granted permission that covers the needed one (ReadWrite includes Read; .Shared includes own mail).
COVERS = {
    "Mail.ReadWrite": ("Mail.ReadWrite", "Mail.ReadWrite.Shared"),
    "Mail.ReadWrite.Shared": ("Mail.ReadWrite.Shared",),
    "Mail.Send": ("Mail.Send", "Mail.Send.Shared"),
    "Mail.Send.Shared": ("Mail.Send.Shared",),
}
SEND_LIMIT_TEXT = ("Microsoft Graph takes at most 4 MB per request, so a mail sent as MIME can be about 3 MB "
                   "(attachments included) once base64-encoded")


class GraphError(Exception):
    """A failed Graph call, explained. Never carries a token."""

    def __init__(self, message: str, *, code: str = "", status: int | None = None,
                 retry_after: float | None = None, permanent: bool = False, reconnect: bool = False,
                 auth: bool = False, detail: str = "", request_id: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.retry_after = retry_after
        self.permanent = permanent
        self.reconnect = reconnect
        self.auth = auth
        self.detail = detail  # Graph's own text, for logs
        self.request_id = request_id  # Microsoft's request-id, for a support case

    @property
    def throttled(self) -> bool:
        return self.status in (429, 503) and self.retry_after is not None

    @property
    def not_found(self) -> bool:
        return self.code == "ErrorItemNotFound"


@dataclass(frozen=True)
class Where:
    """What the sentences may mention: the mailbox, who signed in, and what was being done."""

    address: str
    user: str = ""  # the signed-in user (the delegate, for a shared mailbox)
    shared: bool = False
    graph_host: str = "https://graph.microsoft.com"
    scopes: frozenset[str] = field(default_factory=frozenset)  # from the token, when readable

    def needed(self, operation: str) -> str:
        table = SHARED_PERMISSIONS if self.shared else OWN_PERMISSIONS
        return table.get(operation, table["read"])

    def has(self, permission: str) -> bool | None:
        """Whether the token carries `permission` (or one that covers it); None when unknown."""
        if not self.scopes:
            return None
        granted = {s.lower() for s in self.scopes}
        return any(p.lower() in granted for p in COVERS.get(permission, (permission,)))


def _who(where: Where) -> str:
    return where.user or "the signed-in user"


def throttled(where: Where, status: int, code: str, retry_after: float, detail: str = "",
              request_id: str = "") -> GraphError:
    seconds = max(1, int(round(retry_after)))
    return GraphError(
        f"Microsoft Graph is throttling requests to {where.address} ({code or status}): connector waits "
        f"{seconds} s before using this mailbox again; other mailboxes carry on.",
        code=code, status=status, retry_after=float(seconds), detail=detail, request_id=request_id)


def unreachable(where: Where, reason: str, tls: bool = False, retry_after: float = 30.0) -> GraphError:
    if tls:
        return GraphError(
            f"The TLS certificate of {where.graph_host} could not be verified ({reason}): set [tls] ca_bundle "
            "to the CA that signed it, or check [microsoft] graph_host.", code="TlsError",
            retry_after=300.0)
    return GraphError(
        f"Microsoft Graph at {where.graph_host} did not answer for {where.address} ({reason}): connector "
        f"tries again in {int(retry_after)} s; if it lasts, check [microsoft] graph_host, DNS, the proxy and "
        "the firewall.", code="Unreachable", retry_after=retry_after)


def too_large(where: Where, size: int) -> GraphError:
    megabytes = size / (1024 * 1024)
    return GraphError(
        f"This mail is {megabytes:.1f} MB as MIME, too large to send through Microsoft Graph from "
        f"{where.address}: {SEND_LIMIT_TEXT}. Send large files as links, or switch this mailbox to IMAP and "
        "SMTP, which takes the mailbox's own limit (35 MB by default).",
        code="RequestEntityTooLarge", status=413, permanent=True)


def explain(where: Where, status: int, code: str, detail: str = "", operation: str = "read",
            retry_after: float | None = None, request_id: str = "") -> GraphError:
    """The error for a Graph answer `status` with error `code` (`detail`: Graph's own message)."""
    kw = dict(code=code, status=status, detail=detail, request_id=request_id)
    lowered = (code or "").lower()
    if status == 429 or (status == 503 and retry_after is not None):
        return throttled(where, status, code, retry_after if retry_after is not None else 30.0,
                         detail, request_id)
    if status == 401 or lowered == "invalidauthenticationtoken":
        return GraphError(
            f"Microsoft Graph refused the sign-in of {_who(where)} for {where.address} even with a fresh "
            f"access token ({code or status}: {detail or 'no reason given'}): the grant was revoked, the "
            "password changed, or the token was not issued for Microsoft Graph. Reconnect the mailbox.",
            reconnect=True, auth=True, permanent=True, **kw)
    if lowered == "errorsendasdenied":
        if where.shared:
            fix = (f"{_who(where)} may not send as {where.address} (ErrorSendAsDenied): an Exchange admin grants "
                   f"it with Add-RecipientPermission -Identity {where.address} -Trustee {_who(where)} "
                   "-AccessRights SendAs, then Retry.")
        else:
            fix = (f"Exchange refused to send this mail from {where.address} (ErrorSendAsDenied): its From "
                   "address is another mailbox, which needs Send As for it; send from the mailbox's own address.")
        return GraphError(fix, permanent=True, **kw)
    if lowered in ("mailboxnotenabledforrestapi", "mailboxnotsupportedforrestapi"):
        return GraphError(
            f"{where.address} cannot be used over Microsoft Graph ({code}): the mailbox is on premises, has no "
            "Exchange Online licence, or is inactive or soft-deleted. License it in Exchange Online, or use "
            "IMAP and SMTP for this mailbox.", permanent=True, **kw)
    if lowered in ("erroraccessdenied", "authorization_requestdenied", "accessdenied") or status == 403 \
            and lowered not in ("errorquotaexceeded",):
        return _access_denied(where, operation, kw)
    if lowered == "errorquotaexceeded":
        return GraphError(
            f"{where.address} is full (ErrorQuotaExceeded): Exchange stores nothing more in it. Delete or "
            "archive mail, or raise its quota in Exchange, then Retry.", permanent=True, **kw)
    if status == 413 or lowered in ("requestentitytoolarge", "errormessagesizeexceeded",
                                    "errormessagetoobig"):
        return GraphError(
            f"Microsoft Graph refused this mail from {where.address} as too large ({code or status}): "
            f"{SEND_LIMIT_TEXT}. Send large files as links, or use IMAP and SMTP for this mailbox.",
            permanent=True, **kw)
    if lowered == "erroritemnotfound":
        return GraphError(
            f"The message is no longer in {where.address} (ErrorItemNotFound): it was moved or deleted "
            "meanwhile; nothing to do.", **kw)
    if lowered == "errorinvalidrecipients":
        return GraphError(
            f"Exchange refused the recipients of this mail from {where.address} (ErrorInvalidRecipients): "
            "check the To, Cc and Bcc addresses, then Retry.", permanent=True, **kw)
    if lowered in ("syncstatenotfound", "syncstateinvalid", "resyncrequired"):
        return GraphError(
            f"The change tracking of {where.address} expired ({code}); the folder is read again from the "
            "start, and mail already imported is recognised by its Message-ID.", **kw)
    if lowered in ("errorinvaliduser", "resourcenotfound") and status == 404:
        return GraphError(
            f"Microsoft Graph does not know the mailbox {where.address} ({code}) in the tenant of "
            f"{_who(where)}: check the address, or whether the mailbox was deleted or renamed.",
            permanent=True, **kw)
    if lowered in ("errormimecontentinvalidbase64string", "errormimecontentinvalid"):
        return GraphError(
            f"Exchange could not read this mail's MIME ({code}), so nothing was sent from {where.address}: "
            "the mail is malformed; write it again.", permanent=True, **kw)
    if status >= 500:
        return GraphError(
            f"Microsoft Graph failed for {where.address} ({code or status}): connector tries again in 30 s.",
            retry_after=30.0, **kw)
    return GraphError(
        f"Microsoft Graph refused a request for {where.address} ({status} {code}: {detail or 'no details'}).",
        permanent=400 <= status < 500, **kw)


def _access_denied(where: Where, operation: str, kw: dict) -> GraphError:
    permission = where.needed(operation)
    has = where.has(permission)
    if has is False or (has is None and not where.shared):
        hedge = "" if has is False else "probably "
        return GraphError(
            f"The sign-in of {_who(where)} {hedge}lacks the Microsoft Graph permission {permission} needed to "
            f"{_VERB[operation]} {where.address} ({kw['code'] or 'ErrorAccessDenied'}): add the delegated "
            f"permission {permission} under Microsoft Graph in the app registration (API permissions), grant "
            "admin consent if your tenant requires it, then reconnect the mailbox.",
            permanent=True, reconnect=True, auth=True, **kw)
    if where.shared:
        if operation == "send":
            return GraphError(
                f"{_who(where)} may not send as {where.address} ({kw['code'] or 'ErrorAccessDenied'}): an "
                f"Exchange admin grants Send As with Add-RecipientPermission -Identity {where.address} -Trustee "
                f"{_who(where)} -AccessRights SendAs, then Retry.", permanent=True, **kw)
        return GraphError(
            f"{_who(where)} has no Full Access to {where.address} ({kw['code'] or 'ErrorAccessDenied'}): an "
            f"Exchange admin grants it with Add-MailboxPermission -Identity {where.address} -User "
            f"{_who(where)} -AccessRights FullAccess, then connect again.", permanent=True, **kw)
    return GraphError(
        f"Exchange denied access to {where.address} ({kw['code'] or 'ErrorAccessDenied'}) although the sign-in "
        f"has {permission}: an application access policy or a mailbox restriction blocks this app; ask an "
        "Exchange admin (Get-ApplicationAccessPolicy).", permanent=True, **kw)


_VERB = {"read": "read", "write": "change mail in", "send": "send from", "subscribe": "watch"}
