"""The stand-in's notion of now: real time plus an offset tests can advance.

Advancing it ages everything time-based at once (token lifetimes, subscription expiry, throttling
windows) without sleeping.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime, timezone


class Clock:
    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def time(self) -> float:
        with self._lock:
            return time.time() + self._offset

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), timezone.utc)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds


def iso(moment: datetime) -> str:
    """Graph's DateTimeOffset form for messages: second precision, Z."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso7(moment: datetime) -> str:
    """Graph's form for subscription times: seven fractional digits, Z."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def parse_iso(value: str) -> datetime:
    """ISO 8601 with Z or offset, up to 7 fractional digits (Python takes 6)."""
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    if "." in text:
        head, _, tail = text.partition(".")
        digits = "".join(ch for ch in tail if ch.isdigit())
        zone = tail[len(digits):]
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
