"""Mailboxes, folders and messages as the stand-in keeps them, and Exchange-looking identifiers.

Identifiers follow Outlook's REST ids: opaque, case-sensitive, about 150 characters of URL-safe
base64 (`AAMkA...`). A message's default id changes whenever it moves to another folder; its
immutable id (`AAkALg...`, https://learn.microsoft.com/graph/outlook-immutable-id) does not.
"""
from __future__ import annotations

import base64
import binascii
import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from .mime import ParsedMail, parse

REST_PREFIX = b"\x00\x03\x24\x00"              # encodes as "AAMkAA..."
IMMUTABLE_PREFIX = b"\x00\x09\x00\x2e\x00"     # encodes as "AAkALgA..."
FOLDER_PREFIX = b"\x01\x03\x24\x00"            # encodes as "AQMkAA..."
_ID_CHARS = re.compile(r"^[A-Za-z0-9_\-]+=*$")

# Well-known folder names (https://learn.microsoft.com/graph/api/resources/mailfolder) and the
# display names Exchange gives them in an English mailbox. None: not under the root.
WELL_KNOWN: dict[str, str] = {
    "msgfolderroot": "Top of Information Store",
    "inbox": "Inbox",
    "drafts": "Drafts",
    "sentitems": "Sent Items",
    "deleteditems": "Deleted Items",
    "junkemail": "Junk Email",
    "archive": "Archive",
    "outbox": "Outbox",
    "conversationhistory": "Conversation History",
    "recoverableitemsdeletions": "Deletions",
}
HIDDEN_OR_OUTSIDE_ROOT = ("msgfolderroot", "recoverableitemsdeletions")


def _encode(prefix: bytes, size: int) -> str:
    return base64.urlsafe_b64encode(prefix + secrets.token_bytes(size)).decode("ascii")


def new_rest_id() -> str:
    return _encode(REST_PREFIX, 107)


def new_immutable_id() -> str:
    return _encode(IMMUTABLE_PREFIX, 70)


def new_folder_id() -> str:
    return _encode(FOLDER_PREFIX, 68)


def new_change_key() -> str:
    return base64.b64encode(b"\x16\x00\x00\x00" + secrets.token_bytes(16)).decode("ascii")


def id_kind(value: str) -> str | None:
    """"rest", "immutable" or "folder" for an id shaped like ours; None when malformed."""
    if not _ID_CHARS.match(value):
        return None
    padded = value + "=" * (-len(value) % 4)
    try:
        raw = base64.urlsafe_b64decode(padded)
    except (binascii.Error, ValueError):
        return None
    for kind, prefix in (("rest", REST_PREFIX), ("immutable", IMMUTABLE_PREFIX),
                         ("folder", FOLDER_PREFIX)):
        if raw.startswith(prefix) and len(raw) > len(prefix) + 16:
            return kind
    return None


@dataclass(eq=False)
class Folder:
    folder_id: str
    display_name: str
    parent_id: str | None
    well_known: str | None = None
    hidden: bool = False


@dataclass(eq=False)
class Message:
    """One item. `raw` is the MIME exactly as delivered; `mail` what is read out of it (parsed on
    first use, so delivering thousands of mails for a benchmark stays cheap)."""

    immutable_id: str
    rest_id: str
    folder_id: str
    raw: bytes
    received: datetime
    created: datetime
    modified: datetime
    entered_seq: int  # change sequence when it entered its current folder
    changed_seq: int  # change sequence of its last change (entering counts)
    is_read: bool = False
    is_draft: bool = False
    categories: list[str] = field(default_factory=list)
    flag_status: str = "notFlagged"
    importance: str | None = None  # None: as the MIME says
    change_key: str = field(default_factory=new_change_key)
    _mail: ParsedMail | None = field(default=None, repr=False)

    @property
    def mail(self) -> ParsedMail:
        if self._mail is None:
            self._mail = parse(self.raw)
        return self._mail

    @property
    def internet_message_id(self) -> str:
        """The Message-ID header, or the one Exchange would have assigned."""
        return self.mail.internet_message_id or \
            f"<{self.immutable_id[-24:].replace('-', 'A').replace('_', 'B')}@standin.prod.outlook.com>"


@dataclass(frozen=True)
class Removal:
    """A message left a folder (moved out or deleted): what delta reports as `@removed`."""

    seq: int
    folder_id: str
    rest_id: str
    immutable_id: str


@dataclass(eq=False)
class Mailbox:
    address: str  # primary SMTP address, lower-case
    object_id: str  # the directory object id (a user's oid)
    display_name: str
    tenant_id: str | None
    shared: bool = False
    rest_enabled: bool = True
    quota_exceeded: bool = False
    max_send_bytes: int = 35 * 1024 * 1024  # Exchange Online's default send limit
    folders: dict[str, Folder] = field(default_factory=dict)
    well_known: dict[str, str] = field(default_factory=dict)  # name -> folder id
    messages: dict[str, Message] = field(default_factory=dict)  # by immutable id
    by_rest_id: dict[str, Message] = field(default_factory=dict)
    removals: list[Removal] = field(default_factory=list)
    seq: int = 0

    def __post_init__(self) -> None:
        root = Folder(new_folder_id(), WELL_KNOWN["msgfolderroot"], None, "msgfolderroot", True)
        self.folders[root.folder_id] = root
        self.well_known["msgfolderroot"] = root.folder_id
        for name, display in WELL_KNOWN.items():
            if name == "msgfolderroot":
                continue
            parent = None if name == "recoverableitemsdeletions" else root.folder_id
            folder = Folder(new_folder_id(), display, parent, name,
                            hidden=name in HIDDEN_OR_OUTSIDE_ROOT)
            self.folders[folder.folder_id] = folder
            self.well_known[name] = folder.folder_id

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def folder(self, ref: str) -> Folder | None:
        """By id or (case-insensitive) well-known name."""
        folder_id = self.well_known.get(ref.lower(), ref)
        return self.folders.get(folder_id)

    def children(self, folder_id: str) -> list[Folder]:
        return sorted((f for f in self.folders.values() if f.parent_id == folder_id),
                      key=lambda f: f.display_name.lower())

    def in_folder(self, folder_id: str) -> list[Message]:
        return [m for m in self.messages.values() if m.folder_id == folder_id]


def new_object_id() -> str:
    return str(uuid.uuid4())
