"""What the sync needs from a mailbox and what the outbox needs from a mail server: the transport seam.

`Account.transport` picks the implementation (transport/__init__.py): "imap" is IMAP + SMTP
(transport/imap.py); "graph" is Microsoft Graph (transport/graph.py). The sync is written against `Mailbox`:

- open: `MailServers.open_mailbox()` signs in with a token from tokens.py;
- folder state and an incremental cursor: `select(folder)` gives UIDVALIDITY, then `uids_after(last_uid)`
  lists what is new; the cursor is `accounts.uidvalidity` + `accounts.last_uid`. A transport whose
  position is a string (Graph's delta link) keeps it in `accounts.sync_cursor`, and one whose message ids
  are strings keys its import failures by `import_failures.message_key` (revision 0007). The Graph
  `Mailbox` (transport/graph.py) numbers its mails after `last_uid` and has two more methods, which
  the sync calls when they exist: `resume(sync_cursor, last_uid)` before listing, and
  `cursor_at(last_uid)`, the cursor committed with each batch;
- fetch raw mail: `fetch(uids)`, in order, skipping what vanished;
- post-import actions: `after_import(uids, action, folder)`, run only after the batch is committed;
- wait for news: `has_news()` (cheap, before waiting) and `watch()`: an object the worker's selector
  watches (IDLE), or None when the transport can only be polled;
- look up a sent Message-ID: `find_message_id()`, which the outbox asks after a crash.

The outbox is written against `Submitter`: submit raw MIME as it is (threading headers included).
Failures: `MailboxError` (a sentence for people, with `retry_after`, `reconnect`, `auth_failed`,
`broken` for a connection that is gone) and, for submission, mail/smtp.py's `SendFailure`.
"""
from __future__ import annotations

from typing import Iterator, Protocol

from ..mail.imap import FolderState

__all__ = ["FolderState", "Mailbox", "MailboxError", "Submitter", "Watch"]


class MailboxError(Exception):
    def __init__(self, message: str, *, retry_after: float | None = None, reconnect: bool = False,
                 auth_failed: bool = False, broken: bool = False) -> None:
        super().__init__(message)
        self.message, self.retry_after, self.reconnect = message, retry_after, reconnect
        self.auth_failed, self.broken = auth_failed, broken


class Watch(Protocol):
    """Waiting for news without a thread: the selector watches `fileno()` (mail/imap_idle.py)."""
    news: bool
    closed: bool

    def fileno(self) -> int: ...
    def start(self) -> None: ...
    def ready(self) -> bool: ...
    def read_available(self) -> None: ...
    def done(self) -> None: ...


class Mailbox(Protocol):
    def select(self, folder: str) -> FolderState: ...
    def uids_after(self, last_uid: int) -> list[int]: ...
    def fetch(self, uids: list[int]) -> Iterator[tuple[int, bytes]]: ...
    def after_import(self, uids: list[int], action: str, folder: str) -> None: ...
    def has_news(self) -> bool: ...
    def watch(self) -> Watch | None: ...
    def find_message_id(self, message_id: str) -> bool: ...
    def close(self) -> None: ...


class Submitter(Protocol):
    connected: bool  # False once the server dropped the connection: open another

    def send(self, mail_from: str, rcpt_to: list[str], raw: bytes) -> str: ...
    def dispose(self) -> None: ...
