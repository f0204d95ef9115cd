"""Work on mail content in processes that can be killed, so that a time budget really holds.

Python cannot interrupt a thread stuck in a regular expression or in native code (the HTML
sanitiser), so a budget checked in process is only a wish. Here every item (one mail to parse, one
HTML body to sanitise) runs in a worker process, which notes in shared memory which item of its
slice it is on and since when. A dispatcher thread in the caller's process kills a process whose
item overruns its budget: that item comes back as `Overrun`, the other items of its slice go to
another process, and a replacement process starts when there is work again. A process that dies
(a crash, the OOM killer) costs only the item it was on (`WorkerLost`).

Processes come from a fork server, not from a fork of the caller: the worker has many threads, and
a fork copies their locks. The fork server imports the parser, the sanitiser and the program's main
module once (otherwise every new process would import the main module again: the whole app, a second
or more), so a new process starts in milliseconds. Processes idle for `IDLE_SECONDS` exit.
"""
from __future__ import annotations

import atexit
import ctypes
import logging
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any, Callable

log = logging.getLogger(__name__)
DEFAULT_SIZE = max(1, min(4, os.cpu_count() or 1))  # processes of the shared pool: every core, up to 4
IDLE_SECONDS = 300.0
TRIM_AFTER_SECONDS = 0.05  # a worker process idle this long gives its freed heap back (release_memory)
HANDOVER_SECONDS = 120.0  # for taking a slice in and sending results back: not the items' budget, a safety net
RECEIVING, SENDING = -2, -1  # a process's position while it is not on an item
PRELOAD = ["__main__", "connector.mail.budget", "connector.mail.parse", "connector.mail.sanitize", "connector.parse_pool"]
_PENDING = object()  # a result not in yet (an item's result may be None)


class Overrun(Exception):
    """The item took longer than its budget; the process working on it was killed."""

    def __init__(self, budget: float) -> None:
        super().__init__(f"took longer than its {budget:g} s budget and was stopped")
        self.budget = budget


class WorkerLost(Exception):
    """The process died while working on the item (a crash, or killed from outside)."""


class PoolUnavailable(Exception):
    """No worker process could be started; the caller decides whether to do the work in process."""


@dataclass(eq=False)
class Job:
    """The results of one `BudgetPool.map` call, in item order, once all are in."""

    results: list
    remaining: int
    pool: "BudgetPool"
    done: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def result(self) -> list:
        """Every item's result, or the exception that stands for it (Overrun, WorkerLost, its own error).

        Each item is bounded by its budget, so this returns; if the dispatcher itself ever stopped, the
        items still missing come back as WorkerLost instead of being waited for forever.
        """
        while not self.done.wait(1.0):
            if not self.pool.dispatching():
                for index in range(len(self.results)):
                    self.deliver(index, WorkerLost("the parser processes stopped"))
        return self.results

    def deliver(self, index: int, value: Any) -> None:
        with self.lock:
            if self.results[index] is _PENDING:
                self.results[index] = value
                self.remaining -= 1
                if not self.remaining:
                    self.done.set()


@dataclass(eq=False)
class _Slice:
    """Consecutive items of a job, handed to one process at once."""

    job: Job
    fn: Callable[[Any], Any]
    budget: float
    indices: list[int]
    items: list
    losses: int = 0  # times a process died with this slice while on none of its items

    def deliver_all(self, value: Any) -> None:
        for index in self.indices:
            self.job.deliver(index, value)

    def without(self, index: int | None, lost: bool = False) -> _Slice | None:
        """The rest of the slice once `index` is settled (None: all of it again), or None if nothing is left."""
        kept = [(i, item) for i, item in zip(self.indices, self.items) if i != index]
        if not kept:
            return None
        return _Slice(self.job, self.fn, self.budget, [i for i, _ in kept], [item for _, item in kept],
                      self.losses + lost)


class _Worker:
    """One worker process, its pipe, and where it is (shared memory: start time, then item index or state)."""

    def __init__(self, context) -> None:
        self.progress = context.RawArray("d", 2)
        self.progress[1] = SENDING
        self.conn, child_conn = context.Pipe()
        self.process = context.Process(target=_serve, args=(child_conn, self.progress), daemon=True,
                                       name="connector-parser")
        self.process.start()
        child_conn.close()
        self.slice: _Slice | None = None
        self.idle_since = time.monotonic()

    def take(self, piece: _Slice) -> None:
        """Hand over a slice (may raise OSError if the process is gone, or a pickling error)."""
        self.progress[0] = time.monotonic()
        self.progress[1] = RECEIVING  # unpickling (and importing what the function needs) is not the item's time
        self.slice = piece
        self.conn.send((piece.fn, piece.items))

    def position(self) -> tuple[int, float]:
        """(item index or RECEIVING/SENDING, since when). The index is read first: see _serve."""
        position = int(self.progress[1])
        return position, self.progress[0]

    def deadline(self) -> float:
        position, since = self.position()
        return since + (self.slice.budget if position >= 0 else HANDOVER_SECONDS)

    def stop(self, kill: bool = False) -> None:
        try:
            if kill:
                self.process.kill()
            else:
                self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(timeout=None if kill else 2.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


class BudgetPool:
    """Up to `size` worker processes; `map(fn, items, budget)` runs fn(item) for each item, each within the budget.

    `fn` must be a module-level function (or a functools.partial of one): it is pickled by name.
    """

    def __init__(self, size: int) -> None:
        import multiprocessing

        self.size = max(1, size)
        self.pid = os.getpid()
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(PRELOAD)
        self._lock = threading.Lock()  # guards the queue and the dispatcher's start; workers are the dispatcher's
        self._queue: deque[_Slice] = deque()
        self._workers: list[_Worker] = []
        self._wake_r, self._wake_w = os.pipe()
        self._closing = False
        self._thread: threading.Thread | None = None

    def map(self, fn: Callable[[Any], Any], items: list, budget: float, slice_size: int = 1) -> Job:
        job = Job([_PENDING] * len(items), len(items), self)
        if not items:
            job.done.set()
            return job
        size = max(1, slice_size)
        with self._lock:
            if self._closing:
                raise PoolUnavailable("the parser processes are shutting down")
            for start in range(0, len(items), size):
                self._queue.append(_Slice(job, fn, budget, list(range(start, min(len(items), start + size))),
                                          items[start:start + size]))
            if not self.dispatching():
                self._thread = threading.Thread(target=self._run, name="connector-parser-dispatch", daemon=True)
                self._thread.start()
        self._wake()
        return job

    def warm_up(self) -> None:
        """Start every worker process now, in the background (they start on first use otherwise)."""
        if len(self._workers) < self.size:
            self.map(_noop, [None] * self.size, budget=HANDOVER_SECONDS)

    def dispatching(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def shutdown(self) -> None:
        with self._lock:
            self._closing = True
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        for worker in self._workers:
            worker.stop(kill=True)
        self._workers = []
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    # -- the dispatcher thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    if self._closing:
                        return
                self._dispatch()
                self._collect()
                self._enforce_budgets()
                self._reap_idle()
        except Exception:  # noqa: BLE001 - a bug here must not leave callers waiting: they see WorkerLost
            log.exception("the parser dispatcher failed")

    def _dispatch(self) -> None:
        while True:
            with self._lock:
                worker = next((w for w in self._workers if w.slice is None and w.process.is_alive()), None)
                if not self._queue or (worker is None and len(self._workers) >= self.size):
                    return
                piece = self._queue.popleft()
            if worker is None:
                try:
                    worker = _Worker(self._context)
                except Exception as exc:  # noqa: BLE001 - e.g. no fork server possible here
                    log.error("no parser process could be started: %s", exc)
                    piece.deliver_all(PoolUnavailable(str(exc)))
                    continue
                self._workers.append(worker)
            try:
                worker.take(piece)
            except (OSError, EOFError):  # the process is gone: the slice goes to another one
                self._retire(worker)
                self._requeue(piece.without(None, lost=True))
            except Exception as exc:  # noqa: BLE001 - e.g. a function that does not pickle: a bug, told per item
                worker.slice = None
                piece.deliver_all(exc)

    def _collect(self) -> None:
        now = time.monotonic()
        busy = {w.conn: w for w in self._workers if w.slice is not None}
        # A process moves on to its next item without telling, so look again within half a budget.
        waits = [min(w.deadline() - now, w.slice.budget / 2, 1.0) for w in busy.values()]
        if not busy and self._workers:
            waits.append(min(w.idle_since for w in self._workers) + IDLE_SECONDS - now)
        timeout = max(0.0, min(waits)) + 0.01 if waits else None
        for ready in wait([*busy, self._wake_r], timeout):
            if ready == self._wake_r:
                os.read(self._wake_r, 4096)
                continue
            worker = busy[ready]
            try:
                message = worker.conn.recv()
            except (EOFError, OSError):
                self._lost(worker)
                continue
            piece, worker.slice = worker.slice, None
            worker.idle_since = time.monotonic()
            for index, (_, value) in zip(piece.indices, message):
                piece.job.deliver(index, value)

    def _enforce_budgets(self) -> None:
        now = time.monotonic()
        for worker in [w for w in self._workers if w.slice is not None and now >= w.deadline()]:
            position, _ = worker.position()
            piece = worker.slice
            self._retire(worker, kill=True)
            if position < 0:
                log.warning("a parser process took over %g s to take in or send back work; stopped it",
                            HANDOVER_SECONDS)
                self._requeue(piece.without(None, lost=True))
                continue
            log.warning("a parser process overran its %g s budget on one item; stopped it", piece.budget)
            culprit = piece.indices[min(position, len(piece.indices) - 1)]
            piece.job.deliver(culprit, Overrun(piece.budget))
            self._requeue(piece.without(culprit))

    def _lost(self, worker: _Worker) -> None:
        piece = worker.slice
        position, _ = worker.position()
        self._retire(worker, kill=True)
        code = worker.process.exitcode
        log.warning("a parser process died (exit code %s)", code)
        if position < 0:
            self._requeue(piece.without(None, lost=True))
            return
        culprit = piece.indices[min(position, len(piece.indices) - 1)]
        piece.job.deliver(culprit, WorkerLost(f"the parser process died while reading it (exit code {code})"))
        self._requeue(piece.without(culprit))

    def _retire(self, worker: _Worker, kill: bool = False) -> None:
        worker.slice = None
        if worker in self._workers:
            self._workers.remove(worker)
        worker.stop(kill=kill)

    def _requeue(self, piece: _Slice | None) -> None:
        if piece is None:
            return
        if piece.losses > 2:  # processes keep dying on this slice between items: give up on it
            piece.deliver_all(WorkerLost("the parser processes kept dying on this batch"))
            return
        with self._lock:
            self._queue.appendleft(piece)

    def _reap_idle(self) -> None:
        now = time.monotonic()
        with self._lock:
            if self._queue:
                return
        for worker in [w for w in self._workers if w.slice is None and now - w.idle_since >= IDLE_SECONDS]:
            self._retire(worker)


# -- the worker process ------------------------------------------------------------------------------------
def _serve(conn, progress) -> None:
    """Run slices until told to stop. The start time is written before the index, and the dispatcher reads
    the index first, so it never pairs an old start time with a new item."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which stops us
    _die_with_parent()
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        fn, items = task
        out: list[tuple[bool, Any]] = []
        for index, item in enumerate(items):
            progress[0] = time.monotonic()
            progress[1] = float(index)
            try:
                out.append((True, fn(item)))
            except Exception as exc:  # noqa: BLE001 - that item's result; flattened so that any of them pickles
                out.append((False, RuntimeError(f"{type(exc).__name__}: {exc}")))
        progress[0] = time.monotonic()
        progress[1] = float(SENDING)
        try:
            conn.send(out)
        except (EOFError, OSError):
            return
        except Exception as exc:  # noqa: BLE001 - a result that does not pickle
            conn.send([(False, RuntimeError(f"the result could not be sent back: {exc}"))] * len(items))
        del task, fn, items, out
        if not conn.poll(TRIM_AFTER_SECONDS):  # a burst is over: its heap back to the system (not between slices)
            release_memory()


def _noop(_: object) -> None:
    return None


def _die_with_parent() -> None:
    """Linux: be killed when the fork server goes (it goes when the process that started it does), so a
    process stuck on an item never outlives the app."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        pass


def release_memory() -> None:
    """Give freed heap back to the system (glibc keeps it otherwise): mails are parsed in bursts of large
    objects, and what a burst leaves behind would count against the process's memory for good."""
    if _malloc_trim is not None:
        _malloc_trim(0)


try:
    _malloc_trim = ctypes.CDLL(None).malloc_trim
except (AttributeError, OSError):  # pragma: no cover - not glibc
    _malloc_trim = None


_pool: BudgetPool | None = None
_pool_lock = threading.Lock()


def shared_pool(size: int = DEFAULT_SIZE) -> BudgetPool:
    """The process's pool (a new one after a fork: a pool's processes and thread belong to its creator)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool.pid != os.getpid():
            _pool = BudgetPool(size)
            atexit.register(_pool.shutdown)
        return _pool


def reset_shared_pool() -> None:
    global _pool
    with _pool_lock:
        old, _pool = _pool, None
    if old is not None:
        old.shutdown()
