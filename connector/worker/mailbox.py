"""One mailbox's unit of work, the same for burst mode, `connector sync --once` and the worker's threads:
a pass (retrying failed mails until they import or are quarantined), then waiting for news."""
from __future__ import annotations

import logging
import time

from ..sync import AccountSync, LeaseLost, SyncError
from .failures import record_failure

log = logging.getLogger(__name__)


class MailboxRunner:
    def __init__(self, rt, account_id: int, fence, should_stop=lambda: False, on_deferred=lambda: None) -> None:
        self.rt, self.account_id, self.fence = rt, account_id, fence
        self.sync = AccountSync(rt, account_id, fence, should_stop)
        self.on_deferred = on_deferred
        self.stop_requested = False  # leave after the current pass (rebalanced, lease lost, disconnected)
        self.watch = None
        self.generation = 0  # raised each time it is handed to the watcher
        self.last_result = None
        self.due_at: float | None = None  # when the watcher handed it over (time.monotonic), and why (watch.py)
        self.due_why = ""

    def run_once(self) -> str:
        """One pass: "ok", "failed" (recorded, backing off) or "lost" (another worker holds the mailbox)."""
        try:
            result = self.sync.run_pass()
            while result.failed and not self.sync.should_stop():
                time.sleep(1)  # retry the failed mails soon: quarantined after three attempts
                result = self.sync.run_pass()
        except LeaseLost as exc:
            log.warning("%s; leaving it", exc)
            self.sync.close()
            return "lost"
        except SyncError as exc:
            record_failure(self.rt, self.account_id, exc, self.fence)
            return "failed"
        except Exception:  # noqa: BLE001 - unexpected: record it, back off, let the scheduler retry
            log.exception("mailbox %s: unexpected error", self.account_id)
            self.sync.close()
            record_failure(self.rt, self.account_id, SyncError("An unexpected error stopped the sync; it was logged "
                                                               "and will be retried."), self.fence)
            return "failed"
        self.last_result = result
        if result.imported or result.quarantined:
            log.info("mailbox %s: %s", self.account_id, result.summary())
        if result.deferred:
            self.on_deferred()
        return "ok"

    def start_watch(self):
        """Put the connection in IDLE for the selector: the watch, or None to poll. Raises OSError if it broke."""
        mailbox = self.sync.mailbox
        self.watch = mailbox.watch() if mailbox is not None else None
        if self.watch is not None:
            try:
                self.watch.start()
            except (OSError, ConnectionError):
                self.watch = None
                self.sync.close()
                raise
        return self.watch

    def end_watch(self) -> None:
        watch, self.watch = self.watch, None
        if watch is None:
            return
        try:
            watch.done()
        except (OSError, ConnectionError):
            self.sync.close()  # the next pass reconnects
        else:
            if watch.closed:
                self.sync.close()

    def close(self) -> None:
        self.watch = None
        self.sync.close()
