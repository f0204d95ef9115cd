"""The worker: lifecycle, signals and the tick. Runs inside `connector serve` or alone as `connector worker`.

Each tick (every `TICK` seconds, or at once when the web app has news) the worker beats (registry.py),
works out which mailboxes are its own among the live workers (leases.py), lets go of the others after
their current pass, renews its leases in bulk, and claims and starts the new ones. Started mailboxes (running.py)
run their passes on a small pool of sync threads (`[worker] sync_threads`) and wait for news in the one
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

from sqlalchemy import select

from .. import extract
from ..models import Account
from . import oneshot
from .leases import MailboxLeases
from .periodic import Periodic
from .registry import WorkerRegistry
from .running import RunningMailboxes

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
        self._thread: threading.Thread | None = None
        self.sender = Periodic("sender", self._send, TICK, self._stop)
        self.extractor = Periodic("bodies", self._extract, EXTRACT_CHECK, self._stop)
        self.mailboxes = RunningMailboxes(rt, self.id, self.leases, self._stop, self.extractor.wake)
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

    @property
    def watcher(self):
        return self.mailboxes.watcher

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
        return {"id": self.id, "mailboxes": len(self.mailboxes.runners), "stopping": self.stopping}

    def run(self) -> None:
        log.info("worker %s started", self.id)
        for thread in (self.mailboxes.watcher, self.sender, self.extractor):
            thread.start()
        renew_at = time.monotonic() + self.rt.settings.worker.lease_seconds / 3
        while not self._stop.is_set():
            try:
                if time.monotonic() >= renew_at:  # all leases in one UPDATE
                    renew_at = time.monotonic() + self.rt.settings.worker.lease_seconds / 3
                    for account_id in self.leases.renew(self.mailboxes.held()):
                        self.mailboxes.leave(account_id)
                self.tick()
            except Exception:  # noqa: BLE001 - the scheduler must survive a bad tick (database restart...)
                log.exception("worker tick failed")
            if self.rt.wakeup.wait(TICK):
                self.rt.wakeup.clear()
                self.sender.wake()
        self._shutdown()

    def tick(self) -> None:
        """Beat; let go of what is no longer ours, claim and start what is."""
        self.registry.beat(len(self.mailboxes.runners))
        wanted = set(self.leases.mine(self.registry.live()))
        held = self.mailboxes.held()
        for account_id in held.keys() - wanted:
            self.mailboxes.leave(account_id)  # another worker's now (one joined), or no longer syncable
        self.mailboxes.follow_settings(held.keys() & wanted)
        self._graph_news(held.keys() & wanted)
        taken = False
        for account_id in sorted(wanted - held.keys()):
            if self._stop.is_set():
                return
            token = self.leases.claim(account_id)
            if token is not None:
                self.mailboxes.start(account_id, token)
                taken = True
        if taken:  # a mailbox taken over (after a crash, or from a worker that left) may have bodies pending
            self.extractor.wake()
        if int(time.monotonic()) % 60 < TICK:
            self.registry.forget_the_dead()

    def _graph_news(self, held) -> None:
        """Mailboxes that Microsoft Graph notified of new mail (web/graph_hooks.py) are read now."""
        from ..mail.graph.notify_store import accounts_with_news

        if held:
            with self.rt.db.session() as session:
                for account_id in set(accounts_with_news(session)) & set(held):
                    self.mailboxes.watcher.wake(account_id)

    # -- side loops and shutdown -------------------------------------------------------------------------
    def _send(self) -> None:
        from ..outbox import Sender

        Sender(self.rt, self.id).send_due(should_stop=self._stop.is_set)

    def _extract(self) -> None:
        """Bodies of this worker's mailboxes and of mailboxes nobody holds: shared among the workers."""
        with self.rt.db.session() as session:
            free = set(session.scalars(select(Account.id).where(Account.lease_owner.is_(None))))
        count = extract.extract_pending(self.rt.db, max_size=self.rt.settings.mail.max_message_bytes,
                                        account_ids=free | set(self.mailboxes.held()), should_stop=self._stop.is_set,
                                        budget=self.rt.settings.mail.parse_timeout_seconds)
        if count:
            log.info("extracted the bodies of %s mails", count)

    def _shutdown(self) -> None:
        """Idle mailboxes' leases back at once, out of the workers table, then wait for the passes under way."""
        idle = []
        try:
            idle = self.mailboxes.stop_idle()
            self.registry.leave()
        except Exception:  # noqa: BLE001 - the database may be gone; the leases then run out
            log.exception("handing the leases back failed")
        self.mailboxes.close_all(idle)
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
