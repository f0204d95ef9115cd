"""JSON representations: message, mailFolder and user as Graph v1.0 returns them.

https://learn.microsoft.com/graph/api/resources/message,
https://learn.microsoft.com/graph/api/resources/mailfolder,
https://learn.microsoft.com/graph/api/resources/user. `$select` limits the properties; `id` and
`@odata.etag` always come back.
"""
from __future__ import annotations

import base64
import hashlib
from typing import Any, Callable
from urllib.parse import quote

from . import errors
from .clock import iso
from .mime import Address
from .model import Folder, Mailbox, Message

MESSAGE_PROPERTIES = (
    "id", "createdDateTime", "lastModifiedDateTime", "changeKey", "categories", "receivedDateTime",
    "sentDateTime", "hasAttachments", "internetMessageId", "subject", "bodyPreview", "importance",
    "parentFolderId", "conversationId", "conversationIndex", "isDeliveryReceiptRequested",
    "isReadReceiptRequested", "isRead", "isDraft", "webLink", "inferenceClassification", "body",
    "sender", "from", "toRecipients", "ccRecipients", "bccRecipients", "replyTo", "flag")
SELECT_ONLY = ("uniqueBody", "internetMessageHeaders")
FOLDER_PROPERTIES = ("id", "displayName", "parentFolderId", "childFolderCount",
                     "unreadItemCount", "totalItemCount", "sizeInBytes", "isHidden")


def parse_select(text: str | None, known: tuple[str, ...],
                 entity: str = "Microsoft.OutlookServices.Message") -> list[str] | None:
    """Canonical property names, or None for the default set."""
    if not text:
        return None
    by_lower = {name.lower(): name for name in known}
    chosen = []
    for raw in text.split(","):
        name = raw.strip()
        if not name:
            continue
        if name.lower() not in by_lower:
            raise errors.unknown_property(name, entity)
        chosen.append(by_lower[name.lower()])
    return chosen


def _recipient(address: Address | None) -> dict[str, Any] | None:
    if address is None:
        return None
    return {"emailAddress": {"name": address.name or address.address, "address": address.address}}


def etag(message: Message) -> str:
    return f'W/"{message.change_key}"'


def message_id(message: Message, immutable: bool) -> str:
    return message.immutable_id if immutable else message.rest_id


def _body(message: Message, body_text: bool) -> dict[str, str]:
    if body_text:
        return {"contentType": "text", "content": message.mail.body_text}
    return {"contentType": "html", "content": message.mail.body_html}


def _conversation_index(message: Message) -> str:
    digest = hashlib.sha1(message.mail.conversation_id.encode()).digest()
    return base64.b64encode(digest + b"\x01\x02").decode("ascii")


# name -> value(message, id, body_text); computed only when selected, so a delta with
# $select=id,internetMessageId touches no more of the MIME than the headers.
_VALUES: dict[str, Callable[[Message, str, bool], Any]] = {
    "createdDateTime": lambda m, i, t: iso(m.created),
    "lastModifiedDateTime": lambda m, i, t: iso(m.modified),
    "changeKey": lambda m, i, t: m.change_key,
    "categories": lambda m, i, t: list(m.categories),
    "receivedDateTime": lambda m, i, t: iso(m.received),
    "sentDateTime": lambda m, i, t: iso(m.mail.sent or m.received),
    "hasAttachments": lambda m, i, t: m.mail.has_attachments,
    "internetMessageId": lambda m, i, t: m.internet_message_id,
    "subject": lambda m, i, t: m.mail.subject,
    "bodyPreview": lambda m, i, t: m.mail.preview,
    "importance": lambda m, i, t: m.importance or m.mail.importance,
    "parentFolderId": lambda m, i, t: m.folder_id,
    "conversationId": lambda m, i, t: m.mail.conversation_id,
    "conversationIndex": lambda m, i, t: _conversation_index(m),
    "isDeliveryReceiptRequested": lambda m, i, t: False,
    "isReadReceiptRequested": lambda m, i, t: m.mail.read_receipt,
    "isRead": lambda m, i, t: m.is_read,
    "isDraft": lambda m, i, t: m.is_draft,
    "webLink": lambda m, i, t: "https://outlook.office365.com/owa/?ItemID="
                               + quote(i, safe="") + "&exvsurl=1&viewmodel=ReadMessageItem",
    "inferenceClassification": lambda m, i, t: "focused",
    "body": lambda m, i, t: _body(m, t),
    "sender": lambda m, i, t: _recipient(m.mail.sender),
    "from": lambda m, i, t: _recipient(m.mail.from_),
    "toRecipients": lambda m, i, t: [_recipient(a) for a in m.mail.to],
    "ccRecipients": lambda m, i, t: [_recipient(a) for a in m.mail.cc],
    "bccRecipients": lambda m, i, t: [_recipient(a) for a in m.mail.bcc],
    "replyTo": lambda m, i, t: [_recipient(a) for a in m.mail.reply_to],
    "flag": lambda m, i, t: {"flagStatus": m.flag_status},
    "uniqueBody": lambda m, i, t: _body(m, t),
    "internetMessageHeaders": lambda m, i, t: [{"name": n, "value": v}
                                               for n, v in m.mail.headers],
}


def message_json(message: Message, select: list[str] | None = None, *, immutable: bool = False,
                 body_text: bool = False) -> dict[str, Any]:
    mid = message_id(message, immutable)
    out: dict[str, Any] = {"@odata.etag": etag(message), "id": mid}
    for name in (select if select is not None else MESSAGE_PROPERTIES):
        if name != "id":
            out[name] = _VALUES[name](message, mid, body_text)
    return out


def folder_json(box: Mailbox, folder: Folder, select: list[str] | None = None) -> dict[str, Any]:
    items = box.in_folder(folder.folder_id)
    full = {
        "id": folder.folder_id,
        "displayName": folder.display_name,
        "parentFolderId": folder.parent_id or folder.folder_id,
        "childFolderCount": len(box.children(folder.folder_id)),
        "unreadItemCount": sum(1 for m in items if not m.is_read),
        "totalItemCount": len(items),
        "sizeInBytes": sum(len(m.raw) for m in items),
        "isHidden": folder.hidden,
    }
    names = select if select is not None else list(FOLDER_PROPERTIES)
    return {"id": folder.folder_id, **{n: full[n] for n in names}}


def user_json(box: Mailbox, given_name: str | None, surname: str | None) -> dict[str, Any]:
    return {
        "businessPhones": [], "displayName": box.display_name, "givenName": given_name,
        "jobTitle": None, "mail": box.address, "mobilePhone": None, "officeLocation": None,
        "preferredLanguage": None, "surname": surname, "userPrincipalName": box.address,
        "id": box.object_id,
    }
