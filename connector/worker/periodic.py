"""A side loop of the worker (the sender, the body extractor): run `step` every `interval` seconds, or at
once when woken, until the worker stops; one failing round is logged and the loop goes on."""
from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger(__name__)


class Periodic(threading.Thread):
    def __init__(self, name: str, step: Callable[[], None], interval: float, stop: threading.Event) -> None:
        super().__init__(name=f"connector-{name}", daemon=True)
        self.step, self.interval, self.stopped = step, interval, stop
        self._now = threading.Event()

    def wake(self) -> None:
        self._now.set()

    def run(self) -> None:
        while not self.stopped.is_set():
            self._now.clear()
            try:
                self.step()
            except Exception:  # noqa: BLE001 - e.g. the database restarting; tried again next round
                log.exception("%s failed", self.name)
            self._now.wait(self.interval)
