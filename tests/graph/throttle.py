"""Outlook's per app-and-mailbox limits, and injected trouble (throttling, 5xx, latency).

https://learn.microsoft.com/graph/throttling-limits#outlook-service-limits: for each app ID and
mailbox, 4 concurrent requests, 10,000 requests in 10 minutes and 150 MB uploaded (POST, PATCH,
PUT) in 5 minutes; exceeding one does not affect access to another mailbox. Throttled requests
get 429 with Retry-After (https://learn.microsoft.com/graph/throttling); the service may also
answer 503 with Retry-After when busy.
"""
from __future__ import annotations

import threading
from collections import Counter, defaultdict, deque
from dataclasses import dataclass

from . import errors
from .clock import Clock


@dataclass(eq=False)
class ManualThrottle:
    until: float | None  # clock time when it lifts, or None
    remaining: int | None  # requests still to refuse, or None
    retry_after: int
    status: int
    code: str
    limit: str


@dataclass(eq=False)
class Fault:
    remaining: int
    status: int
    code: str
    message: str
    retry_after: int | None
    address: str | None
    method: str | None
    path: str | None
    after: bool  # do the work, then answer the error (the answer is "lost")

    def matches(self, method: str, path: str, address: str | None) -> bool:
        return (self.address is None or self.address == address) \
            and (self.method is None or self.method.upper() == method) \
            and (self.path is None or self.path.lower() in path.lower())

    def error(self) -> errors.GraphError:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        return errors.GraphError(self.status, self.code, self.message, headers)


DEFAULT_FAULT_CODES = {500: ("generalException", "An unspecified error has occurred."),
                       502: ("BadGateway", "Bad Gateway"),
                       503: ("serviceNotAvailable", "The service is temporarily unavailable."),
                       504: ("UnknownError", "Gateway Timeout")}


class Throttle:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.concurrency_limit = 4
        self.rate_limit = 10_000
        self.rate_window = 600.0
        self.upload_limit = 150 * 1024 * 1024
        self.upload_window = 300.0
        self.lock = threading.Lock()
        self.inflight: Counter[tuple[str, str]] = Counter()
        self.history: dict[tuple[str, str], deque[float]] = defaultdict(deque)
        self.uploads: dict[tuple[str, str], deque[tuple[float, int]]] = defaultdict(deque)
        self.manual: dict[str, ManualThrottle] = {}
        self.faults: list[Fault] = []
        self.delays: dict[str, float] = {}

    def _manual(self, address: str, now: float) -> errors.GraphError | None:
        rule = self.manual.get(address)
        if rule is None:
            return None
        if (rule.until is not None and now >= rule.until) or rule.remaining == 0:
            del self.manual[address]
            return None
        if rule.remaining is not None:
            rule.remaining -= 1
        retry = rule.retry_after if rule.until is None else \
            max(1, min(rule.retry_after, int(rule.until - now + 0.999)))
        return errors.throttled(retry, rule.limit, rule.status, rule.code)

    def admit(self, app_id: str, address: str, upload: int) -> tuple[str, str]:
        """Count the request in, or raise the throttling answer."""
        key = (app_id, address)
        now = self.clock.time()
        with self.lock:
            manual = self._manual(address, now)
            if manual is not None:
                raise manual
            if self.inflight[key] >= self.concurrency_limit:
                raise errors.throttled(1, "MailboxConcurrency")
            history = self.history[key]
            while history and history[0] <= now - self.rate_window:
                history.popleft()
            if len(history) >= self.rate_limit:
                raise errors.throttled(max(1, int(history[0] + self.rate_window - now + 1)),
                                       "RequestRate")
            uploads = self.uploads[key]
            while uploads and uploads[0][0] <= now - self.upload_window:
                uploads.popleft()
            if upload and sum(size for _, size in uploads) + upload > self.upload_limit:
                raise errors.throttled(max(1, int(uploads[0][0] + self.upload_window - now + 1)),
                                       "IncomingBytes")
            history.append(now)
            if upload:
                uploads.append((now, upload))
            self.inflight[key] += 1
        return key

    def release(self, key: tuple[str, str]) -> None:
        with self.lock:
            self.inflight[key] -= 1

    def fault_for(self, method: str, path: str, address: str | None) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.remaining > 0 and fault.matches(method, path, address):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self.faults.remove(fault)
                    return fault
        return None
