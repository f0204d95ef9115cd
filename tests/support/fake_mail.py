"""Fake mail servers behind the transport seam (connector/transport): in-memory mailboxes with UIDs, a
sent folder and a watch that the worker's selector can wait on, so lease, spread and backoff tests run
without Dovecot. The Dovecot suites stay the acceptance tests of the real transport."""
from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

from connector.mail.imap import FolderState
from connector.transport.base import MailboxError


@dataclass
class FakeStore:
    """One mailbox's folder: uid -> raw mail."""
    uidvalidity: int = 1
    messages: dict[int, bytes] = field(default_factory=dict)
    next_uid: int = 1
    sent_ids: set[str] = field(default_factory=set)
    actions: list[tuple[str, list[int]]] = field(default_factory=list)
    watches: list["FakeWatch"] = field(default_factory=list)


class FakeServers:
    """Stands in for `MailServers` (rt.servers): `deliver()` adds mail and wakes whoever watches the mailbox."""

    def __init__(self) -> None:
        self.stores: dict[str, FakeStore] = {}
        self.lock = threading.Lock()
        self.refuse: dict[str, MailboxError] = {}  # address -> the error open_mailbox raises
        self.fetch_hook = None  # called (address, uids) before a fetch returns: tests pause a pass there
        self.opened: list[str] = []
        self.submitted: list[tuple[str, bytes]] = []

    def store(self, address: str) -> FakeStore:
        with self.lock:
            return self.stores.setdefault(address, FakeStore())

    def deliver(self, address: str, raw: bytes) -> int:
        store = self.store(address)
        with self.lock:
            uid = store.next_uid
            store.messages[uid] = raw
            store.next_uid += 1
            watches = list(store.watches)
        for watch in watches:
            watch.notify()
        return uid

    def open_mailbox(self, session, account):
        if account.address in self.refuse:
            raise self.refuse[account.address]
        session.commit()
        self.opened.append(account.address)
        return FakeMailbox(self, account.address)

    def open_submitter(self, session, account):
        session.commit()
        return FakeSubmitter(self)


class FakeMailbox:
    def __init__(self, servers: FakeServers, address: str) -> None:
        self.servers, self.address = servers, address
        self.store = servers.store(address)
        self.closed = False

    def select(self, folder: str) -> FolderState:
        return FolderState(self.store.uidvalidity, len(self.store.messages), self.store.next_uid)

    def uids_after(self, last_uid: int) -> list[int]:
        with self.servers.lock:
            return sorted(uid for uid in self.store.messages if uid > last_uid)

    def fetch(self, uids):
        if self.servers.fetch_hook is not None:
            self.servers.fetch_hook(self.address, uids)
        with self.servers.lock:
            return [(uid, self.store.messages[uid]) for uid in uids if uid in self.store.messages]

    def after_import(self, uids, action, folder) -> None:
        self.store.actions.append((action, list(uids)))
        if action in ("move", "delete"):
            with self.servers.lock:
                for uid in uids:
                    self.store.messages.pop(uid, None)

    def has_news(self) -> bool:
        return False

    def watch(self):
        return FakeWatch(self.store, self.servers)

    def find_message_id(self, message_id: str) -> bool:
        return message_id in self.store.sent_ids

    def close(self) -> None:
        self.closed = True


class FakeWatch:
    """Readable (a socketpair) when mail is delivered while it is started."""

    def __init__(self, store: FakeStore, servers: FakeServers) -> None:
        self.store, self.servers = store, servers
        self.reader, self.writer = socket.socketpair()
        self.reader.setblocking(False)
        self.news = False
        self.closed = False

    def fileno(self) -> int:
        return self.reader.fileno()

    def start(self) -> None:
        with self.servers.lock:
            self.store.watches.append(self)

    def notify(self) -> None:
        try:
            self.writer.send(b"!")
        except OSError:
            pass

    def ready(self) -> bool:
        return self.news

    def read_available(self) -> None:
        try:
            if self.reader.recv(64):
                self.news = True
        except BlockingIOError:
            pass

    def done(self) -> None:
        with self.servers.lock:
            if self in self.store.watches:
                self.store.watches.remove(self)
        self.reader.close()
        self.writer.close()


class FakeSubmitter:
    connected = True

    def __init__(self, servers: FakeServers) -> None:
        self.servers = servers

    def send(self, mail_from: str, rcpt_to: list[str], raw: bytes) -> str:
        self.servers.submitted.append((mail_from, raw))
        return "250 2.0.0 queued"

    def dispose(self) -> None:
        pass
