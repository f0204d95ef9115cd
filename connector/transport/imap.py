"""The IMAP + SMTP transport: `Mailbox` over mail/imap.py, `Submitter` is mail/smtp.py's SmtpSubmitter.

Here IMAP's failures become `MailboxError`s: the server's refusals keep their sentence, and network
trouble or a protocol abort (the server went away) is `broken`, after which the sync reconnects.
"""
from __future__ import annotations

import functools
from typing import Iterator

from ..mail.imap import FolderState, ImapError, ImapMailbox
from .base import MailboxError


def is_connection_error(exc: BaseException) -> bool:
    """Network trouble and protocol aborts, as opposed to our own bugs."""
    return isinstance(exc, (OSError, EOFError)) or type(exc).__module__.startswith(("imaplib", "imapclient"))


def _classified(method):
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except ImapError as exc:
            raise MailboxError(str(exc), retry_after=exc.retry_after, auth_failed=exc.auth_failed) from None
        except Exception as exc:  # noqa: BLE001 - classified here
            if not is_connection_error(exc):
                raise
            raise MailboxError(f"The IMAP connection broke ({type(exc).__name__}); reconnecting.",
                               broken=True) from None
    return call


class ImapTransport:
    """One signed-in IMAP connection as the sync uses it."""

    def __init__(self, host: str, port: int, ca_bundle: str | None, factory=ImapMailbox) -> None:
        self.imap = _classified(lambda self: factory(host, port, ca_bundle))(self)
        self.idle_enabled = True

    login = _classified(lambda self, user, token: self.imap.login(user, token))
    select = _classified(lambda self, folder: self.imap.select(folder))
    uids_after = _classified(lambda self, last_uid: self.imap.uids_after(last_uid))
    has_news = _classified(lambda self: self.imap.pending_news())
    find_message_id = _classified(lambda self, message_id: self.imap.find_message_id(message_id))

    @_classified
    def fetch(self, uids: list[int]) -> Iterator[tuple[int, bytes]]:
        return list(self.imap.fetch(uids))

    @_classified
    def after_import(self, uids: list[int], action: str, folder: str) -> None:
        if not uids or action == "keep":
            return
        if action == "mark_read":
            self.imap.mark_read(uids)
        elif action == "move" and folder:
            self.imap.move(uids, folder)
        elif action == "delete":
            self.imap.delete(uids)

    def watch(self):
        return self.imap.idle_session() if self.idle_enabled and self.imap.supports_idle() else None

    def close(self) -> None:
        self.imap.close()

    @property
    def folder_state(self) -> FolderState | None:
        return self.imap.folder_state
