"""The mailboxes a worker holds, while it holds them: one runner each, a small pool of sync threads that run
their passes, and the watcher (watch.py) that waits for news on all of them.

A mailbox cycles: a pass on a sync thread, then (unless it has news already) IDLE in the watcher, which
hands it back to a sync thread on news, on its timer (re-issue IDLE, or poll), or when the worker wants
it to leave (`leave()`: another worker's now, its lease lost, or the worker stopping). It leaves after
its pass, not in the middle of one, and its lease is released then.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from ..models import Account
from ..sync.fence import Fence
from .mailbox import MailboxRunner
from .watch import Watcher

log = logging.getLogger(__name__)


class RunningMailboxes:
    def __init__(self, rt, owner: str, leases, stopping: threading.Event, on_deferred) -> None:
        self.rt, self.owner, self.leases, self.stopping, self.on_deferred = rt, owner, leases, stopping, on_deferred
        self.runners: dict[int, MailboxRunner] = {}
        self._lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max(1, rt.settings.worker.sync_threads), thread_name_prefix="connector-sync")
        self.watcher = Watcher(self._submit)

    def held(self) -> dict[int, int]:
        """Mailbox id -> the fencing token it was claimed with."""
        with self._lock:
            return {account_id: runner.fence.token for account_id, runner in self.runners.items()}

    def start(self, account_id: int, token: int) -> None:
        runner = MailboxRunner(self.rt, account_id, Fence(account_id, self.owner, token,
                                                          self.rt.settings.worker.lease_seconds),
                               self.stopping.is_set, self.on_deferred)
        with self._lock:
            self.runners[account_id] = runner
        self._submit(runner)

    def leave(self, account_id: int) -> None:
        runner = self.runners.get(account_id)
        if runner is not None and not runner.stop_requested:
            runner.stop_requested = True
            self.watcher.wake(account_id)  # if it waits for news; else it leaves after its pass

    def follow_settings(self, account_ids: set[int]) -> None:
        """A changed folder is read at once (each pass selects the account's folder)."""
        if not account_ids:
            return
        with self.rt.db.session() as session:
            folders = dict(session.execute(select(Account.id, Account.folder)
                                           .where(Account.id.in_(account_ids))).all())
        for account_id, folder in folders.items():
            runner = self.runners.get(account_id)
            if runner is not None and runner.sync.folder not in (None, folder):
                self.watcher.wake(account_id)

    # -- one mailbox's cycle, on a sync thread -----------------------------------------------------------
    def _submit(self, runner: MailboxRunner) -> None:
        try:
            self.pool.submit(self._cycle, runner)
        except RuntimeError:  # the pool is shut down: the worker is stopping
            self._finish(runner)

    def _cycle(self, runner: MailboxRunner) -> None:
        try:
            picked = time.monotonic()
            due_at, why, runner.due_at = runner.due_at, runner.due_why, None  # a resubmitted pass has none
            runner.end_watch()
            if runner.stop_requested or self.stopping.is_set():
                return self._finish(runner)
            ended = time.monotonic()
            outcome = runner.run_once()
            if outcome == "ok" and why == "news" and due_at is not None:
                _log_news(runner, due_at, picked, ended, time.monotonic())
            if outcome != "ok" or runner.stop_requested or self.stopping.is_set():
                return self._finish(runner)
            if runner.sync.has_news():
                return self._submit(runner)
            try:
                watch = runner.start_watch()
            except (OSError, ConnectionError):
                return self._submit(runner)  # the connection broke: the next pass reconnects
            settings = self.rt.settings.worker
            poll = min(settings.poll_interval_seconds,  # a transport may poll more often (Graph: a delta request)
                       getattr(runner.sync.mailbox, "poll_seconds", None) or settings.poll_interval_seconds)
            self.watcher.add(runner, settings.idle_timeout_seconds if watch else poll)
        except Exception:  # noqa: BLE001
            log.exception("mailbox %s: unexpected error", runner.account_id)
            self._finish(runner)

    def _finish(self, runner: MailboxRunner) -> None:
        runner.close()
        with self._lock:
            self.runners.pop(runner.account_id, None)
        self.leases.release([runner.account_id])

    # -- shutdown ------------------------------------------------------------------------------------------
    def stop_idle(self) -> list[MailboxRunner]:
        """Stop watching; the mailboxes that were waiting for news leave at once (their leases released in one
        UPDATE). Returns them, their connections still open, for `close_all`."""
        idle = self.watcher.stop()
        with self._lock:
            for runner in idle:
                self.runners.pop(runner.account_id, None)
        self.leases.release([runner.account_id for runner in idle])
        return idle

    def close_all(self, idle: list[MailboxRunner]) -> None:
        """Wait for the passes under way (each ends after its current batch), then close everything."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        for runner in idle:
            runner.close()
        with self._lock:
            rest = list(self.runners.values())
        for runner in rest:  # submitted but cancelled before they ran
            self._finish(runner)


def _log_news(runner: MailboxRunner, due_at: float, picked: float, ended: float, done: float) -> None:
    """For a pass that IDLE news started and that imported mail: where the time from the news to the commit
    went, so a slow new mail can be told apart (a busy sync pool, ending IDLE, listing, fetching and
    parsing, storing). One line per new mail, as the import line above it."""
    result = runner.last_result
    if result is None or not result.imported:
        return
    phases = ", ".join(f"{name} {result.timings[name]:.3f} s" for name in ("list", "fetch", "store")
                       if name in result.timings)
    log.info("mailbox %s: news to commit %.3f s (waiting for a sync thread %.3f s, ending IDLE %.3f s, pass "
             "%.3f s: %s)", runner.account_id, done - due_at, picked - due_at, ended - picked,
             done - ended, phases)
