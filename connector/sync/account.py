"""One mailbox's sync across passes: keeps its connection (sign in once, then wait for news on it)."""
from __future__ import annotations

import logging

from .. import blobs, parse_pool
from ..models import Account, utcnow
from ..transport.base import Mailbox, MailboxError
from .errors import PassResult, SyncError
from .fence import Unfenced
from .import_pass import ImportPass

log = logging.getLogger(__name__)


class AccountSync:
    """`fence`: the lease this worker holds on the mailbox (fence.py); without one the pass is unfenced,
    which only tests and tools that run one mailbox by hand do."""

    def __init__(self, rt, account_id: int, fence=None, should_stop=lambda: False) -> None:
        self.rt = rt
        self.should_stop = should_stop
        self.account_id = account_id
        self.fence = fence or Unfenced()
        self.mailbox: Mailbox | None = None
        self.folder: str | None = None  # the folder the last pass read
        self.files = blobs.BlobFiles.for_bind(rt.db.engine)  # where raw mail goes on SQLite (None: the table)
        parse_pool.warm_up()  # in the background: the first new mail should not wait for a parser process

    def run_pass(self) -> PassResult:
        """Import everything new; raises SyncError for failures of the whole pass, LeaseLost when fenced out."""
        with self.rt.db.sessionmaker() as session:
            account = session.get(Account, self.account_id)
            if account is None or account.status in ("disabled", "needs_reconnect") or not account.token_cache_enc:
                raise SyncError("The mailbox is not connected.", reconnect=account is not None
                                and account.status == "needs_reconnect")
            session.commit()  # never hold a transaction (SQLite's write lock) across network calls
            try:
                if self.mailbox is None:
                    self.mailbox = self.rt.servers.open_mailbox(session, account)
                result = ImportPass(self.rt, self.mailbox, self.fence, self.files, self.should_stop).run(session, account)
                self.folder = account.folder
            except MailboxError as exc:
                self.close()
                raise SyncError(exc.message, retry_after=exc.retry_after, reconnect=exc.reconnect) from None
            except BaseException:
                self.close()
                raise
            account.status = "connected"
            account.last_error = None
            account.last_sync_at = utcnow()
            account.failure_count = 0
            account.next_attempt_at = None
            self.fence.commit(session)
            return result

    def has_news(self) -> bool:
        """Did mail arrive during the last pass? (Servers do not announce it again once IDLE starts.)"""
        if self.mailbox is None:
            return False
        try:
            return self.mailbox.has_news()
        except MailboxError:
            self.close()
            return True  # the next pass reconnects

    def close(self) -> None:
        if self.mailbox is not None:
            mailbox, self.mailbox = self.mailbox, None
            try:
                mailbox.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
