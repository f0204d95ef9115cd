"""Who may do what to which mailbox: Graph's delegated permissions plus Exchange's mailbox rights.

- Own mailbox: reading needs Mail.Read or Mail.ReadWrite (the .Shared variants include the user's
  own mail), changes need Mail.ReadWrite, sending needs Mail.Send.
  (https://learn.microsoft.com/graph/permissions-reference#mail-permissions)
- Another mailbox (/users/{shared}/...): Mail.Read.Shared / Mail.ReadWrite.Shared and Full Access
  to it (the IdP's User.mailboxes); sending as it needs Mail.Send.Shared and Send As
  (https://learn.microsoft.com/graph/outlook-share-messages-folders,
  https://learn.microsoft.com/graph/outlook-send-mail-from-other-user).
- Change notifications with delegated permissions only cover the signed-in user's own mailbox
  (https://learn.microsoft.com/graph/outlook-change-notifications-overview).
- App-only tokens use application roles (Mail.Read, Mail.ReadWrite, Mail.Send) for any mailbox.
"""
from __future__ import annotations

from . import errors
from .auth import Caller
from .model import Mailbox

OWN = {
    "read": ("Mail.Read", "Mail.ReadWrite", "Mail.Read.Shared", "Mail.ReadWrite.Shared"),
    "write": ("Mail.ReadWrite", "Mail.ReadWrite.Shared"),
    "send": ("Mail.Send", "Mail.Send.Shared"),
    "subscribe": ("Mail.ReadBasic", "Mail.Read", "Mail.ReadWrite", "Mail.Read.Shared",
                  "Mail.ReadWrite.Shared"),
}
OTHER = {
    "read": ("Mail.Read.Shared", "Mail.ReadWrite.Shared"),
    "write": ("Mail.ReadWrite.Shared",),
    "send": ("Mail.Send.Shared",),
}
APPLICATION = {
    "read": ("Mail.Read", "Mail.ReadWrite"),
    "write": ("Mail.ReadWrite",),
    "send": ("Mail.Send",),
    "subscribe": ("Mail.ReadBasic.All", "Mail.Read", "Mail.ReadWrite"),
}
DIRECTORY = ("User.Read", "User.ReadBasic.All", "User.Read.All", "User.ReadWrite",
             "User.ReadWrite.All", "Directory.Read.All")
OTHER_USERS = ("User.ReadBasic.All", "User.Read.All", "User.ReadWrite.All", "Directory.Read.All")


def is_own(caller: Caller, box: Mailbox) -> bool:
    return caller.email is not None and caller.email == box.address


def has_full_access(caller: Caller, box: Mailbox) -> bool:
    return caller.user is not None and box.address in caller.user.mailboxes


def check(caller: Caller, box: Mailbox, need: str, send_as: set[tuple[str, str]]) -> None:
    """Raise the 403 Graph answers when `caller` may not `need` ("read", "write", "send",
    "subscribe") on `box`."""
    if caller.is_app:
        if not caller.has_any(*APPLICATION[need]):
            raise errors.access_denied()
        return
    if is_own(caller, box):
        if not caller.has_any(*OWN[need]):
            raise errors.access_denied()
        return
    if need == "subscribe":
        raise errors.GraphError(
            403, "ExtensionError", "Operation: Create; Exception: [Status Code: Forbidden; "
            "Reason: Access is denied. Check credentials and try again.]")
    if not caller.has_any(*OTHER[need]):
        raise errors.access_denied()
    if need == "send":
        if (caller.email or "", box.address) not in send_as:
            raise errors.send_as_denied()
    elif not has_full_access(caller, box):
        raise errors.access_denied()


def may_send_as(caller: Caller, box: Mailbox, sender: str,
                send_as: set[tuple[str, str]]) -> bool:
    """A From address other than the mailbox itself needs Send As for it (Exchange's rule)."""
    sender = sender.lower()
    if sender == box.address:
        return True
    return (box.address, sender) in send_as or (caller.email or "", sender) in send_as
