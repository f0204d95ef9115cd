"""Delivers change and lifecycle notifications from a background thread, as Graph's webhooks do.

https://learn.microsoft.com/graph/change-notifications-delivery-webhooks: each notification is a
POST of a changeNotificationCollection; the endpoint must answer 2xx within 3 seconds or Graph
retries (for up to 4 hours; here `retry_delays`), then drops it. Lifecycle notifications
(https://learn.microsoft.com/graph/change-notifications-lifecycle-events) go to
lifecycleNotificationUrl: reauthorizationRequired before the subscription or the access token
behind it runs out, subscriptionRemoved, and missed when notifications could not be delivered.
Expired subscriptions are removed silently and notify no more.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import requests

from .clock import Clock
from .model import Mailbox, Message
from .render import etag, message_id
from .subscriptions import Subscription, change_payload, lifecycle_payload

log = logging.getLogger(__name__)
LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")


@dataclass(frozen=True)
class Delivery:
    """One POST attempt (or a notification dropped because its subscription was paused)."""

    kind: str  # "change" | "lifecycle" | "dropped"
    subscription_id: str
    url: str
    payload: dict[str, Any]
    status: int | None
    error: str | None
    attempt: int


class Notifier:
    def __init__(self, clock: Clock, ca_path: str) -> None:
        self.clock = clock
        self.ca_path = ca_path
        self.timeout = 3.0
        self.retry_delays: list[float] = [0.5, 1.0, 2.0]
        self.reauthorization_lead = 15 * 60.0  # seconds before expiry (of sub or token)
        self.subscriptions: dict[str, Subscription] = {}
        self.log: list[Delivery] = []
        self.lock = threading.Condition()
        self._jobs: list[tuple[float, int, str, str, str, dict[str, Any], int]] = []
        self._counter = itertools.count()
        self._busy = 0
        self._stop = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="graph-notifier", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self.lock:
            self._stop = True
            self.lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    # ---- registry ----------------------------------------------------------------------------

    def active(self, sub_id: str) -> Subscription | None:
        with self.lock:
            sub = self.subscriptions.get(sub_id)
            if sub is not None and sub.expiration <= self.clock.now():
                del self.subscriptions[sub_id]
                return None
            return sub

    def add(self, sub: Subscription) -> None:
        with self.lock:
            self.subscriptions[sub.sub_id] = sub

    def remove(self, sub_id: str) -> None:
        with self.lock:
            self.subscriptions.pop(sub_id, None)

    # ---- producing ---------------------------------------------------------------------------

    def _enqueue(self, kind: str, sub: Subscription, url: str, payload: dict[str, Any],
                 attempt: int = 0, delay: float = 0.0) -> None:
        heapq.heappush(self._jobs, (time.monotonic() + delay, next(self._counter), kind,
                                    sub.sub_id, url, payload, attempt))
        self.lock.notify_all()

    def on_change(self, box: Mailbox, change: str, message: Message, folder_id: str) -> None:
        """Store listener: a message was created in, updated in or removed from a folder."""
        now = self.clock.now()
        with self.lock:
            for sub in list(self.subscriptions.values()):
                if sub.address != box.address or change not in sub.change_types \
                        or (sub.folder_id is not None and sub.folder_id != folder_id) \
                        or sub.expiration <= now:
                    continue
                payload = change_payload(sub, change, box.object_id,
                                         message_id(message, sub.immutable_ids), etag(message))
                if sub.paused:
                    self.log.append(Delivery("dropped", sub.sub_id, sub.notification_url,
                                             payload, None, "subscription needs reauthorization", 0))
                    continue
                self._enqueue("change", sub, sub.notification_url, payload)

    def lifecycle(self, sub: Subscription, event: str) -> None:
        with self.lock:
            if event == "reauthorizationRequired":
                sub.needs_reauthorization = True
            if sub.lifecycle_url:
                self._enqueue("lifecycle", sub, sub.lifecycle_url, lifecycle_payload(sub, event))
            if event == "subscriptionRemoved":
                self.subscriptions.pop(sub.sub_id, None)

    # ---- delivering --------------------------------------------------------------------------

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """True once nothing is due now or being posted (retries scheduled later don't count)."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while self._busy or (self._jobs and self._jobs[0][0] <= time.monotonic()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.lock.wait(min(remaining, 0.05))
        return True

    def _tick(self) -> None:
        now = self.clock.now()
        for sub in list(self.subscriptions.values()):
            if sub.expiration <= now:
                del self.subscriptions[sub.sub_id]
                continue
            deadline = min(sub.expiration.timestamp(), sub.token_exp)
            if sub.lifecycle_url and deadline - now.timestamp() <= self.reauthorization_lead \
                    and deadline not in sub.reauth_sent:
                sub.reauth_sent.add(deadline)
                self.lifecycle(sub, "reauthorizationRequired")

    def _post(self, http: requests.Session, url: str, payload: dict[str, Any]
              ) -> tuple[int | None, str | None]:
        try:
            answer = http.post(url, json=payload, timeout=self.timeout)
        except requests.RequestException as exc:
            return None, type(exc).__name__
        return answer.status_code, None if 200 <= answer.status_code < 300 else "not 2xx"

    def _run(self) -> None:
        with requests.Session() as http:
            http.trust_env = False
            http.verify = self.ca_path
            while True:
                with self.lock:
                    if self._stop:
                        return
                    self._tick()
                    if not self._jobs or self._jobs[0][0] > time.monotonic():
                        self.lock.wait(0.05)
                        continue
                    _, _, kind, sub_id, url, payload, attempt = heapq.heappop(self._jobs)
                    self._busy += 1
                status, error = self._post(http, url, payload)
                with self.lock:
                    self._busy -= 1
                    self.log.append(Delivery(kind, sub_id, url, payload, status, error, attempt))
                    sub = self.subscriptions.get(sub_id)
                    if error and sub is not None:
                        if attempt < len(self.retry_delays):
                            self._enqueue(kind, sub, url, payload, attempt + 1,
                                          self.retry_delays[attempt])
                        elif kind == "change":
                            self.lifecycle(sub, "missed")
                    self.lock.notify_all()
