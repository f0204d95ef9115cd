"""The mail store behind the stand-in: mailboxes, folders, messages and their change sequence.

Every change bumps the mailbox's sequence number; delta queries and change notifications are
both derived from it. Moving a message gives it a new default id (Graph's default behaviour);
DELETE moves it to Deleted Items, and deleting from Deleted Items removes it for good (it then
sits in the hidden Recoverable Items "Deletions" folder).
"""
from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime
from typing import Callable

from . import errors
from .clock import Clock
from .model import Folder, Mailbox, Message, Removal, id_kind, new_change_key, new_folder_id, \
    new_immutable_id, new_object_id, new_rest_id

# listener(mailbox, change_type, message, folder_id): "created" | "updated" | "deleted"
Listener = Callable[[Mailbox, str, Message, str], None]


class Store:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self.mailboxes: dict[str, Mailbox] = {}  # by address and by object id (lower-case)
        self.listeners: list[Listener] = []

    # ---- mailboxes ---------------------------------------------------------------------------

    def add_mailbox(self, address: str, display_name: str | None = None,
                    object_id: str | None = None, tenant_id: str | None = None,
                    shared: bool = False) -> Mailbox:
        with self.lock:
            existing = self.mailboxes.get(address.lower())
            if existing is not None:
                return existing
            box = Mailbox(address.lower(), object_id or new_object_id(),
                          display_name or address.split("@")[0].title(), tenant_id, shared)
            self.mailboxes[box.address] = box
            self.mailboxes[box.object_id.lower()] = box
            return box

    def find(self, ref: str) -> Mailbox | None:
        with self.lock:
            return self.mailboxes.get(ref.lower())

    def all(self) -> list[Mailbox]:
        with self.lock:
            return list({id(b): b for b in self.mailboxes.values()}.values())

    # ---- lookups -----------------------------------------------------------------------------

    def folder(self, box: Mailbox, ref: str) -> Folder:
        folder = box.folder(ref)
        if folder is not None:
            return folder
        if id_kind(ref) is None:  # neither an id of ours nor a well-known name
            raise errors.id_malformed()
        raise errors.item_not_found()

    def message(self, box: Mailbox, ref: str) -> Message:
        kind = id_kind(ref)
        if kind is None or kind == "folder":
            raise errors.id_malformed()
        found = box.by_rest_id.get(ref) if kind == "rest" else box.messages.get(ref)
        if found is None:
            raise errors.item_not_found()
        return found

    # ---- changes -----------------------------------------------------------------------------

    def _emit(self, box: Mailbox, change: str, message: Message, folder_id: str) -> None:
        for listener in list(self.listeners):
            listener(box, change, message, folder_id)

    def deliver(self, box: Mailbox, raw: bytes, folder_ref: str = "inbox", *,
                is_read: bool = False, received: datetime | None = None) -> Message:
        with self.lock:
            folder = self.folder(box, folder_ref)
            now = self.clock.now()
            seq = box.next_seq()
            message = Message(new_immutable_id(), new_rest_id(), folder.folder_id, bytes(raw),
                              received or now, now, now, seq, seq, is_read=is_read)
            box.messages[message.immutable_id] = message
            box.by_rest_id[message.rest_id] = message
            self._emit(box, "created", message, folder.folder_id)
            return message

    def _leave(self, box: Mailbox, message: Message, seq: int) -> None:
        box.removals.append(Removal(seq, message.folder_id, message.rest_id, message.immutable_id))
        box.by_rest_id.pop(message.rest_id, None)
        self._emit(box, "deleted", replace(message), message.folder_id)

    def move(self, box: Mailbox, message: Message, folder: Folder) -> Message:
        with self.lock:
            if folder.folder_id == message.folder_id:
                return message
            seq = box.next_seq()
            self._leave(box, message, seq)
            message.rest_id = new_rest_id()
            message.folder_id = folder.folder_id
            message.entered_seq = message.changed_seq = seq
            message.modified = self.clock.now()
            message.change_key = new_change_key()
            box.by_rest_id[message.rest_id] = message
            self._emit(box, "created", message, folder.folder_id)
            return message

    def copy(self, box: Mailbox, message: Message, folder: Folder) -> Message:
        with self.lock:
            twin = self.deliver(box, message.raw, folder.folder_id, is_read=message.is_read,
                                received=message.received)
            twin.categories = list(message.categories)
            twin.flag_status = message.flag_status
            return twin

    def delete(self, box: Mailbox, message: Message) -> None:
        """DELETE: to Deleted Items; from Deleted Items (or with permanent=True) for good."""
        with self.lock:
            deleted_items = box.folders[box.well_known["deleteditems"]]
            if message.folder_id != deleted_items.folder_id:
                self.move(box, message, deleted_items)
            else:
                self.purge(box, message)

    def purge(self, box: Mailbox, message: Message) -> None:
        with self.lock:
            if message.folder_id == box.well_known["recoverableitemsdeletions"]:
                box.by_rest_id.pop(message.rest_id, None)
                box.messages.pop(message.immutable_id, None)
                return
            self.move(box, message, box.folders[box.well_known["recoverableitemsdeletions"]])

    def update(self, box: Mailbox, message: Message, **changes: object) -> Message:
        with self.lock:
            for name, value in changes.items():
                setattr(message, name, value)
            message.changed_seq = box.next_seq()
            message.modified = self.clock.now()
            message.change_key = new_change_key()
            self._emit(box, "updated", message, message.folder_id)
            return message

    def create_folder(self, box: Mailbox, parent: Folder, name: str, hidden: bool = False) -> Folder:
        with self.lock:
            if any(f.display_name.lower() == name.lower() for f in box.children(parent.folder_id)):
                raise errors.GraphError(409, "ErrorFolderExists",
                                        "A folder with the specified name already exists.")
            folder = Folder(new_folder_id(), name, parent.folder_id, None, hidden)
            box.folders[folder.folder_id] = folder
            return folder
