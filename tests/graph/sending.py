"""sendMail: MIME (base64, Content-Type text/plain) or JSON; a copy to Sent Items; "delivery".

https://learn.microsoft.com/graph/api/user-sendmail and /graph/outlook-send-mime-message:
202 Accepted and no body; the message is saved in Sent Items (JSON: unless saveToSentItems is
false); malformed base64 is 400 ErrorMimeContentInvalidBase64String. The MIME keeps its own
Message-ID, In-Reply-To and References; Exchange stamps Message-ID and Date when missing and
strips Bcc from what recipients get. JSON internetMessageHeaders must be x- headers.
What is "delivered" is recorded per mailbox; recipients that are mailboxes of the stand-in get a
copy in their Inbox.
"""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import errors, permissions
from .auth import Caller
from .clock import Clock
from .mime import add_missing_headers, from_json, parse, without_bcc
from .model import Mailbox
from .store import Store

MESSAGE_ID_DOMAIN = "GRAPHSTANDIN01.namprd00.prod.outlook.com"


@dataclass(frozen=True)
class SentMail:
    mailbox: str  # the mailbox that sent it
    raw: bytes  # as transmitted (no Bcc)
    recipients: tuple[str, ...]  # envelope: To, Cc and Bcc addresses
    message_id: str | None
    at: datetime
    sender: str  # the signed-in user whose token sent it


class Sender:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.send_as: set[tuple[str, str]] = set()  # (delegate or mailbox, address it may send as)
        self.outbox: list[SentMail] = []

    def mime(self, caller: Caller, box: Mailbox, body: bytes) -> None:
        compact = re.sub(rb"\s+", b"", body)
        try:
            raw = base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError):
            raise errors.bad_request("Invalid base64 string for MIME content.",
                                     "ErrorMimeContentInvalidBase64String") from None
        if not raw.strip() or b":" not in raw.split(b"\n", 1)[0]:
            raise errors.bad_request("MIME content does not contain all required information, "
                                     "malformed formatting, or empty.", "ErrorMimeContentInvalid")
        self._submit(caller, box, raw, save=True)

    def json(self, caller: Caller, box: Mailbox, payload: Any) -> None:
        if not isinstance(payload, dict) or not isinstance(payload.get("message"), dict):
            raise errors.bad_request("The value of the parameter 'Message' is empty.",
                                     "ErrorInvalidParameter")
        message = payload["message"]
        for header in message.get("internetMessageHeaders") or []:
            name = str((header or {}).get("name") or "")
            if not name.lower().startswith("x-"):
                raise errors.bad_request(f"The internet message header name '{name}' should "
                                         "start with 'x-' or 'X-'.", "InvalidInternetMessageHeader")
        save = payload.get("saveToSentItems", True)
        save = not (save is False or str(save).lower() == "false")
        try:
            raw = from_json(message, box.address, box.display_name, MESSAGE_ID_DOMAIN,
                            self.clock.now())
        except (binascii.Error, ValueError):
            raise errors.bad_request("Invalid attachment content.", "ErrorInvalidParameter") from None
        self._submit(caller, box, raw, save=save)

    def _submit(self, caller: Caller, box: Mailbox, raw: bytes, save: bool) -> None:
        mail = parse(raw)
        if not mail.recipients():
            raise errors.bad_request("At least one recipient isn't valid., A message can't be "
                                     "sent because it contains no recipients.",
                                     "ErrorInvalidRecipients")
        sender = mail.from_.address if mail.from_ else box.address
        if not permissions.may_send_as(caller, box, sender, self.send_as):
            raise errors.send_as_denied()
        if len(raw) > box.max_send_bytes:
            raise errors.message_too_large()
        if box.quota_exceeded:
            raise errors.quota_exceeded()
        now = self.clock.now()
        if mail.from_ is None:
            raw = f'From: "{box.display_name}" <{box.address}>'.encode() + \
                (b"\r\n" if b"\r\n" in raw[:2000] else b"\n") + raw
        raw = add_missing_headers(raw, MESSAGE_ID_DOMAIN, now)
        mail = parse(raw)
        with self.store.lock:
            if save:
                self.store.deliver(box, raw, "sentitems", is_read=True)
            wire = without_bcc(raw)
            self.outbox.append(SentMail(box.address, wire, tuple(mail.recipients()),
                                        mail.internet_message_id, now, caller.email or ""))
            for address in dict.fromkeys(a.lower() for a in mail.recipients()):
                target = self.store.find(address)
                if target is not None and not target.quota_exceeded:
                    self.store.deliver(target, wire, "inbox")
