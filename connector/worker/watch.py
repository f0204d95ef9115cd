"""One thread watches every idle mailbox: the IDLE connections in a selector, and a timer for each (re-issue
IDLE before the server's timeout, or the next poll where there is no IDLE). A mailbox with news, a broken
connection, a due timer or a wake-up goes to `on_due`, which hands it to the sync threads; it comes back
with `add()` after its pass. At rest this thread sleeps in the selector: the server's keep-alives
("* OK Still here", every few minutes) are all it reads."""
from __future__ import annotations

import heapq
import itertools
import logging
import selectors
import socket
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)


class Watcher(threading.Thread):
    def __init__(self, on_due: Callable[[object], None]) -> None:
        super().__init__(name="connector-watch", daemon=True)
        self.on_due = on_due
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._incoming: list[tuple[object, float]] = []
        self._wakes: set[int] = set()
        self._timers: list[tuple[float, int, int, object]] = []  # (when, seq, generation, runner)
        self._seq = itertools.count()
        self.watched: dict[int, object] = {}  # account id -> runner, touched by this thread only
        self._stopping = False

    # -- from other threads -----------------------------------------------------------------------------
    def add(self, runner, due_in: float) -> None:
        with self._lock:
            self._incoming.append((runner, due_in))
        self._poke()

    def wake(self, account_id: int) -> None:
        with self._lock:
            self._wakes.add(account_id)
        self._poke()

    def stop(self) -> list:
        """Stop watching; returns the runners that were waiting (their connections still open)."""
        self._stopping = True
        self._poke()
        self.join(10)
        with self._lock:
            left = list(self.watched.values()) + [runner for runner, _ in self._incoming]
            self._incoming.clear()
        return left

    def _poke(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    # -- the thread -------------------------------------------------------------------------------------
    def run(self) -> None:
        while not self._stopping:
            try:
                self._take_requests()
                timeout = max(0.0, min(60.0, self._timers[0][0] - time.monotonic())) if self._timers else 60.0
                for key, _ in self.selector.select(timeout):
                    if key.data is None:
                        self._drain_wakeups()
                    else:
                        self._readable(key.data)
                self._fire_timers()
            except Exception:  # noqa: BLE001 - the watcher must survive one bad connection
                log.exception("watching mailboxes failed")
                time.sleep(0.5)

    def _take_requests(self) -> None:
        with self._lock:
            incoming, self._incoming = self._incoming, []
            wakes, self._wakes = self._wakes, set()
        for runner, due_in in incoming:
            runner.generation += 1
            self.watched[runner.account_id] = runner
            heapq.heappush(self._timers, (time.monotonic() + due_in, next(self._seq), runner.generation, runner))
            if runner.watch is not None:
                if runner.watch.ready():
                    self._due(runner, "news")
                    continue
                self.selector.register(runner.watch.fileno(), selectors.EVENT_READ, runner)
        for account_id in wakes:
            if account_id in self.watched:
                self._due(self.watched[account_id], "wake")

    def _readable(self, runner) -> None:
        runner.watch.read_available()
        if runner.watch.news or runner.watch.closed:
            self._due(runner, "news" if runner.watch.news else "closed")

    def _fire_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, generation, runner = heapq.heappop(self._timers)
            if self.watched.get(runner.account_id) is runner and runner.generation == generation:
                self._due(runner, "timer")

    def _due(self, runner, why: str) -> None:
        """Hand the mailbox to the sync threads; `why` and the moment go with it, so the pass can say how
        long news waited for a thread (running.py)."""
        runner.due_at, runner.due_why = time.monotonic(), why
        self.watched.pop(runner.account_id, None)
        runner.generation += 1  # its timer no longer counts
        if runner.watch is not None:
            try:
                self.selector.unregister(runner.watch.fileno())
            except (KeyError, ValueError, OSError):
                pass
        self.on_due(runner)

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
