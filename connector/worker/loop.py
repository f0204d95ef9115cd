"""The worker: lifecycle, signals and the tick. Runs inside `connector serve` or alone as `connector worker`.

Each tick (every `TICK` seconds, or at once when the web app has news) the worker beats (registry.py),
works out which mailboxes are its own among the live workers (leases.py), lets go of the others after
their current pass, renews its leases in bulk, and claims and starts the new ones. A started mailbox
runs its passes on a small pool of sync threads (`[worker] sync_threads`) and waits for news in the one
watcher thread (watch.py). The sender and the body extractor are side loops (periodic.py).

Like RQ's worker it finishes what it is doing on the first SIGTERM and exits at once on the second: the
leases of idle mailboxes are handed back at once, a mailbox in the middle of a pass ends after its current
batch and then hands its lease back, and the worker leaves the workers table. It imports no web code.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from .. import extract
from ..models import Account
from ..sync.fence import Fence
from . import oneshot
from .leases import MailboxLeases
from .mailbox import MailboxRunner
from .periodic import Periodic
from .registry import WorkerRegistry
from .watch import Watcher

log = logging.getLogger(__name__)
TICK = 2.0
EXTRACT_CHECK = 60.0  # seconds between looks for pending bodies nobody announced (left by a stopped process)


class Worker:
    def __init__(self, rt, name: str | None = None) -> None:
        self.rt, settings = rt, rt.settings.worker
        self.id = f"{socket.gethostname()}:{os.getpid()}:{name or 'worker'}"
        self._stop = threading.Event()
        self.leases = MailboxLeases(rt.db, self.id, settings.lease_seconds)
        self.registry = WorkerRegistry(rt.db, self.id, dead_after=min(30.0, max(6.0, settings.lease_seconds / 2)))
        self.runners: dict[int, MailboxRunner] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.pool = ThreadPoolExecutor(max(1, settings.sync_threads), thread_name_prefix="connector-sync")
        self.watcher = Watcher(self._submit)
        self.sender = Periodic("sender", self._send, TICK, self._stop)
        self.extractor = Periodic("bodies", self._extract, EXTRACT_CHECK, self._stop)
        rt.worker = self
        # A pass fetches in one thread while it writes the database in another (sync/); a 1 ms GIL switch
        # interval gets the fetching thread back to its socket sooner (import benchmark: 5.6 s against 5.7-6.2 s).
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))

    # -- lifecycle -------------------------------------------------------------------------------------
    def start_background(self) -> None:
        self._thread = threading.Thread(target=self.run, name="connector-worker", daemon=True)
        self._thread.start()

    def stop(self, wait: bool = True, timeout: float = 30.0) -> None:
        self._stop.set()
        self.rt.wakeup.set()
        if wait and self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def install_signal_handlers(self) -> None:
        def first(signum, _frame):
            log.info("signal %s: finishing current work, then exiting (send again to exit now)", signum)
            self._stop.set()
            self.rt.wakeup.set()
            signal.signal(signal.SIGTERM, second)
            signal.signal(signal.SIGINT, second)

        def second(signum, _frame):
            log.warning("signal %s again: exiting now", signum)
            os._exit(1)

        signal.signal(signal.SIGTERM, first)
        signal.signal(signal.SIGINT, first)

    def status(self) -> dict:
        return {"id": self.id, "mailboxes": len(self.runners), "stopping": self.stopping}

    def run(self) -> None:
        log.info("worker %s started", self.id)
        for thread in (self.watcher, self.sender, self.extractor):
            thread.start()
        renew_at = time.monotonic() + self.rt.settings.worker.lease_seconds / 3
        while not self._stop.is_set():
            try:
                if time.monotonic() >= renew_at:
                    renew_at = time.monotonic() + self.rt.settings.worker.lease_seconds / 3
                    for account_id in self.leases.renew(self._held()):
                        self._leave(account_id)
                self.tick()
            except Exception:  # noqa: BLE001 - the scheduler must survive a bad tick (database restart...)
                log.exception("worker tick failed")
            if self.rt.wakeup.wait(TICK):
                self.rt.wakeup.clear()
                self.sender.wake()
        self._shutdown()

    # -- the tick --------------------------------------------------------------------------------------
    def tick(self) -> None:
        self.registry.beat(len(self.runners))
        wanted = set(self.leases.mine(self.registry.live()))
        held = self._held()
        for account_id in held.keys() - wanted:
            self._leave(account_id)  # another worker's now (one joined), or no longer syncable
        self._follow_settings(held.keys() & wanted)
        for account_id in sorted(wanted - held.keys()):
            if self._stop.is_set():
                return
            token = self.leases.claim(account_id)
            if token is not None:
                runner = MailboxRunner(self.rt, account_id, Fence(account_id, self.id, token, self.rt.settings.worker.lease_seconds), self._stop.is_set,
                                       self.extractor.wake)
                with self._lock:
                    self.runners[account_id] = runner
                self._submit(runner)
        if int(time.monotonic()) % 60 < TICK:
            self.registry.forget_the_dead()

    def _held(self) -> dict[int, int]:
        with self._lock:
            return {account_id: runner.fence.token for account_id, runner in self.runners.items()}

    def _leave(self, account_id: int) -> None:
        runner = self.runners.get(account_id)
        if runner is not None and not runner.stop_requested:
            runner.stop_requested = True
            self.watcher.wake(account_id)  # if it waits for news; else it leaves after its pass

    def _follow_settings(self, account_ids: set[int]) -> None:
        """A changed folder is read at once (a pass selects it)."""
        if not account_ids:
            return
        with self.rt.db.session() as session:
            folders = dict(session.execute(select(Account.id, Account.folder).where(Account.id.in_(account_ids))).all())
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
            runner.end_watch()
            if runner.stop_requested or self._stop.is_set():
                return self._finish(runner)
            outcome = runner.run_once()
            if outcome != "ok" or runner.stop_requested or self._stop.is_set():
                return self._finish(runner)
            if runner.sync.has_news():
                return self._submit(runner)
            try:
                watch = runner.start_watch()
            except (OSError, ConnectionError):
                return self._submit(runner)  # the connection broke: the next pass reconnects
            settings = self.rt.settings.worker
            self.watcher.add(runner, settings.idle_timeout_seconds if watch else settings.poll_interval_seconds)
        except Exception:  # noqa: BLE001
            log.exception("mailbox %s: unexpected error", runner.account_id)
            self._finish(runner)

    def _finish(self, runner: MailboxRunner) -> None:
        runner.close()
        with self._lock:
            self.runners.pop(runner.account_id, None)
        self.leases.release([runner.account_id])

    # -- side loops and shutdown -------------------------------------------------------------------------
    def _send(self) -> None:
        from ..outbox import Sender

        Sender(self.rt, self.id).send_due(should_stop=self._stop.is_set)

    def _extract(self) -> None:
        """Bodies of this worker's mailboxes and of mailboxes nobody holds: shared among the workers."""
        with self.rt.db.session() as session:
            free = set(session.scalars(select(Account.id).where(Account.lease_owner.is_(None))))
        count = extract.extract_pending(self.rt.db, max_size=self.rt.settings.mail.max_message_bytes,
                                        account_ids=free | set(self._held()), should_stop=self._stop.is_set,
                                        budget=self.rt.settings.mail.parse_timeout_seconds)
        if count:
            log.info("extracted the bodies of %s mails", count)

    def _shutdown(self) -> None:
        idle = self.watcher.stop()
        try:
            self.leases.release([runner.account_id for runner in idle])  # at once, before anything slow
            self.registry.leave()
        except Exception:  # noqa: BLE001 - the database may be gone; the leases then run out
            log.exception("handing the leases back failed")
        with self._lock:
            for runner in idle:
                self.runners.pop(runner.account_id, None)
        self.pool.shutdown(wait=True, cancel_futures=True)
        for runner in idle:
            runner.close()
        with self._lock:
            rest = list(self.runners.values())
        for runner in rest:  # submitted but cancelled before they ran
            self._finish(runner)
        for thread in (self.sender, self.extractor):
            thread.wake()
            thread.join(30)
        self.registry.leave()
        log.info("worker %s stopped", self.id)

    # -- one-shot modes ---------------------------------------------------------------------------------
    def sync_once(self, address: str | None = None) -> tuple[bool, list[str]]:
        return oneshot.sync_once(self.rt, self.id, address, self._stop.is_set)

    def run_burst(self) -> bool:
        return oneshot.run_burst(self.rt, self.id)
