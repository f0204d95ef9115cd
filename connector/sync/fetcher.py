"""Fetch: the batches of a pass are fetched and handed to the parser ahead of the storing, in a thread."""
from __future__ import annotations

import queue
import threading
from typing import Callable

from .. import parse_pool
from ..transport.base import Mailbox


class Fetcher(threading.Thread):
    """Fetches the batches of a pass and starts parsing them, ahead of the storing, in its own thread.

    Network reads and SQLite writes both release the GIL, so fetching batch n+1 overlaps storing
    batch n. `POOL_DEPTH` batches wait at most (memory stays bounded). The thread owns the IMAP
    connection for the pass, so it also runs the post-import actions that the storing side queues
    after each commit; `finish()` runs what is left once it has stopped.
    """

    def __init__(self, mailbox: Mailbox, batches: list[list[int]], prepare,
                 after_import: Callable[[list[int]], None]) -> None:
        super().__init__(name=f"{threading.current_thread().name}-fetch", daemon=True)
        self.mailbox, self.batches, self.prepare, self.after_import = mailbox, batches, prepare, after_import
        self.ready: queue.Queue = queue.Queue(maxsize=parse_pool.POOL_DEPTH)
        self.actions: queue.SimpleQueue[list[int]] = queue.SimpleQueue()
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            for batch in self.batches:
                self._run_actions()
                if self.stopped.is_set():
                    return
                self._hand_over((batch, self.prepare(list(self.mailbox.fetch(batch)))))
            self._hand_over(None)
        except BaseException as exc:  # noqa: BLE001 - raised again on the storing side
            self._hand_over(exc)

    def _hand_over(self, item) -> None:
        while not self.stopped.is_set():
            try:
                self.ready.put(item, timeout=0.1)
                return
            except queue.Full:
                self._run_actions()

    def _run_actions(self) -> None:
        while True:
            try:
                uids = self.actions.get_nowait()
            except queue.Empty:
                return
            self.after_import(uids)

    def parsed_batches(self):
        """(batch, callable giving its parsed mails), in order; raises what fetching raised."""
        while True:
            item = self.ready.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def finish(self) -> None:
        self.stopped.set()
        self.join()
        self._run_actions()


