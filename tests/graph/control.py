"""The Python control API tests use to arrange mailboxes and trouble, and to look inside.

Nothing here is reachable over HTTP: it is the test's side of the stand-in.
"""
from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .model import Mailbox, Message
from .notifier import LIFECYCLE_EVENTS, Delivery
from .routes import LoggedRequest
from .sending import SentMail
from .throttle import DEFAULT_FAULT_CODES, Fault, ManualThrottle

if TYPE_CHECKING:
    from .server import GraphServer


class Controls:
    # ---- mailboxes and mail ------------------------------------------------------------------

    def mailbox(self: "GraphServer", address: str, display_name: str | None = None) -> Mailbox:
        """The mailbox for `address`: an IdP user's, or a shared mailbox (created if new, in the
        IdP tenant owning the domain)."""
        found = self.store.find(address)
        if found is not None:
            return found
        user = self.idp.users.get(address.lower())
        if user is not None:
            return self.user_mailbox(user)
        tenant = self.idp.tenants.get(address.rsplit("@", 1)[-1].lower())
        return self.store.add_mailbox(address, display_name, None,
                                      tenant.tenant_id if tenant else None, shared=True)

    def deliver(self: "GraphServer", address: str, raw: bytes, folder: str = "inbox",
                is_read: bool = False) -> Message:
        """Mail arrives in `folder` (well-known name, display name or id) exactly as `raw`."""
        box = self.mailbox(address)
        return self.store.deliver(box, raw, self._folder_id(box, folder), is_read=is_read)

    def _folder_id(self, box: Mailbox, folder: str) -> str:
        found = box.folder(folder) or next(
            (f for f in box.folders.values() if f.display_name.lower() == folder.lower()), None)
        if found is None:
            raise KeyError(f"no folder {folder!r} in {box.address}")
        return found.folder_id

    def folder_id(self: "GraphServer", address: str, folder: str) -> str:
        return self._folder_id(self.mailbox(address), folder)

    def create_folder(self: "GraphServer", address: str, name: str,
                      parent: str = "msgfolderroot") -> str:
        box = self.mailbox(address)
        with self.store.lock:
            return self.store.create_folder(box, box.folders[self._folder_id(box, parent)],
                                            name).folder_id

    def messages(self: "GraphServer", address: str, folder: str = "inbox") -> list[Message]:
        """Messages now in `folder`, oldest first."""
        box = self.mailbox(address)
        with self.store.lock:
            return sorted(box.in_folder(self._folder_id(box, folder)),
                          key=lambda m: (m.received, m.entered_seq))

    def sent(self: "GraphServer", address: str) -> list[bytes]:
        """The MIME this mailbox sent (as transmitted: Bcc removed), in order."""
        return [m.raw for m in self.sent_mail(address)]

    def sent_mail(self: "GraphServer", address: str) -> list[SentMail]:
        with self.store.lock:
            return [m for m in self.sender.outbox if m.mailbox == address.lower()]

    # ---- rights and mailbox state ------------------------------------------------------------

    def grant_send_as(self: "GraphServer", delegate: str, mailbox: str) -> None:
        """Exchange's Send As: `delegate` (a user) may send as `mailbox` (Full Access is the
        IdP's grant_mailbox_access)."""
        self.sender.send_as.add((delegate.lower(), mailbox.lower()))

    def revoke_send_as(self: "GraphServer", delegate: str, mailbox: str) -> None:
        self.sender.send_as.discard((delegate.lower(), mailbox.lower()))

    def disable_rest(self: "GraphServer", address: str, disabled: bool = True) -> None:
        """Every call for this mailbox answers 404 MailboxNotEnabledForRESTAPI."""
        self.mailbox(address).rest_enabled = not disabled

    def set_quota_exceeded(self: "GraphServer", address: str, exceeded: bool = True) -> None:
        """Sending answers 403 ErrorQuotaExceeded; mail sent to it is not delivered."""
        self.mailbox(address).quota_exceeded = exceeded

    def set_max_send_size(self: "GraphServer", address: str, size: int) -> None:
        self.mailbox(address).max_send_bytes = size

    def expire_delta_tokens(self: "GraphServer", address: str, resync: bool = False) -> None:
        """Outstanding delta/skip tokens stop working: 410 syncStateNotFound, or with
        resync=True 410 resyncRequired plus a Location header with the initial URL."""
        self.delta.expire(address.lower(), resync)

    # ---- trouble ------------------------------------------------------------------------------

    def throttle(self: "GraphServer", address: str, requests: int | None = None,
                         seconds: float | None = None, retry_after: int = 2, status: int = 429,
                         code: str = "ApplicationThrottled",
                         limit: str = "MailboxConcurrency") -> None:
        """Refuse the next `requests` calls for this mailbox, or all for `seconds`, with
        `status` and Retry-After; other mailboxes are not affected."""
        until = self.clock.time() + seconds if seconds is not None else None
        if until is None and requests is None:
            requests = 1
        with self.limits.lock:
            self.limits.manual[address.lower()] = ManualThrottle(until, requests, retry_after,
                                                                   status, code, limit)

    def unthrottle(self: "GraphServer", address: str) -> None:
        with self.limits.lock:
            self.limits.manual.pop(address.lower(), None)

    def fail_next(self: "GraphServer", count: int = 1, status: int = 503,
                  code: str | None = None, message: str | None = None,
                  retry_after: int | None = None, address: str | None = None,
                  method: str | None = None, path: str | None = None,
                  after: bool = False) -> None:
        """The next `count` matching requests answer `status`. `after=True`: the operation is
        done first and only the answer is an error (a send that succeeded but whose 202 was
        lost). Matching: mailbox address, HTTP method, a substring of the path."""
        default_code, default_message = DEFAULT_FAULT_CODES.get(status, ("UnknownError", "Error"))
        with self.limits.lock:
            self.limits.faults.append(Fault(count, status, code or default_code,
                                              message or default_message, retry_after,
                                              address.lower() if address else None, method,
                                              path, after))

    def delay(self: "GraphServer", address: str, seconds: float) -> None:
        """Each call for this mailbox takes `seconds` longer (0 to stop); it counts against the
        mailbox's 4 concurrent requests meanwhile."""
        self.limits.delays[address.lower()] = seconds

    def advance(self: "GraphServer", seconds: float) -> None:
        """Move the stand-in's clock: tokens, subscriptions and throttling windows age."""
        self.clock.advance(seconds)

    # ---- inspection ---------------------------------------------------------------------------

    def requests_for(self: "GraphServer", address: str | None = None) -> list[LoggedRequest]:
        with self._log_lock:
            return [r for r in self.requests if address is None or r.mailbox == address.lower()]

    def clear_log(self: "GraphServer") -> None:
        with self._log_lock:
            self.requests.clear()

class SubscriptionControls:
    """Arranging change-notification trouble: lifecycle events, expiry, delivery log."""

    def subscriptions(self: "GraphServer", address: str | None = None) -> list[Any]:
        with self.notifier.lock:
            return [s for s in self.notifier.subscriptions.values()
                    if address is None or s.address == address.lower()]

    def send_lifecycle(self: "GraphServer", subscription_id: str, event: str,
                       pause: bool = False) -> None:
        """Send a lifecycle notification; subscriptionRemoved also removes the subscription;
        pause=True (with reauthorizationRequired) holds change notifications back - they are
        lost - until the app renews or reauthorizes."""
        if event not in LIFECYCLE_EVENTS:
            raise ValueError(f"event must be one of {LIFECYCLE_EVENTS}")
        with self.notifier.lock:
            sub = self.notifier.subscriptions[subscription_id]
            sub.paused = pause and event == "reauthorizationRequired"
            self.notifier.lifecycle(sub, event)

    def expire_subscription(self: "GraphServer", subscription_id: str) -> None:
        with self.notifier.lock:
            sub = self.notifier.subscriptions[subscription_id]
            sub.expiration = self.clock.now() - timedelta(seconds=1)

    def notifications(self: "GraphServer", kind: str | None = None) -> list[Delivery]:
        with self.notifier.lock:
            return [d for d in self.notifier.log if kind is None or d.kind == kind]

    def wait_notifications(self: "GraphServer", timeout: float = 10.0) -> bool:
        return self.notifier.wait_idle(timeout)
