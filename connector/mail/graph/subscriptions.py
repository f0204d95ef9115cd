"""One change-notification subscription per Graph mailbox, kept alive by the worker.

Used when `[app] base_url` is public HTTPS (Graph delivers only there); otherwise, and for shared
mailboxes, the worker polls the delta link every few seconds instead. `maintain()` is called before
each pass of a Graph mailbox and says whether notifications come (`PushState.active`) and whether
to read the folder now (`read_now`: after creating, or after a lifecycle event).

- Create (https://learn.microsoft.com/graph/api/subscription-post-subscriptions): resource
  `me/mailFolders('{id}')/messages`, changeType `created`, a notification and a lifecycle URL
  (both get Graph's validation request, answered by web/graph_hooks.py), and a fresh random
  clientState whose hash is stored (notify_store.py). A failed create is tried again after
  `RETRY_CREATE`, polling meanwhile.
- Lifetime: Microsoft's subscription page has said 4,230 minutes (under 3 days) for Outlook messages
  (microsoft-graph-docs-contrib, api-reference/v1.0/resources/subscription.md, "Maximum length of
  subscription per resource type", revisions 5248ec1e and 00181c0b); later revisions and the stand-in
  allow 10,080 minutes (under 7 days) without resource data. We ask for 4,230, which both accept, and
  renew when half of it is left (about 35 hours ahead), so a worker down for a day loses nothing.
- Lifecycle (https://learn.microsoft.com/graph/change-notifications-lifecycle-events):
  `subscriptionRemoved` -> create again; `reauthorizationRequired` -> POST .../reauthorize with a
  fresh token (a 404 there: create again); `missed` -> read the folder. Each also reads the folder,
  since notifications may have been lost meanwhile.
- Delegated permissions cannot subscribe to another user's (a shared) mailbox
  (https://learn.microsoft.com/graph/outlook-change-notifications-overview): those are polled.
Network calls run outside database transactions (SQLite takes its write lock at BEGIN).
"""
from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable
from urllib.parse import quote, urlsplit

from ...db import Database
from ...models import GraphSubscription, utcnow
from . import notify_store
from .errors import GraphError
from .mailbox import GraphMailbox

log = logging.getLogger(__name__)

LIFETIME_MINUTES = 4230
RETRY_CREATE = timedelta(minutes=15)
NOTIFICATIONS_PATH = "/hooks/graph/notifications"
LIFECYCLE_PATH = "/hooks/graph/lifecycle"
_PRIVATE_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa")


@dataclass(frozen=True)
class PushState:
    active: bool  # Graph notifies this mailbox: waiting for news is enough (poll slowly as a safety net)
    read_now: bool  # read the folder now (created, renewed after a gap, lifecycle event)
    reason: str = ""  # why notifications are off, in words


def public_https_problem(base_url: str) -> str | None:
    """Why Graph could not reach `base_url` with notifications, or None."""
    parts = urlsplit(base_url or "")
    host = (parts.hostname or "").lower()
    if parts.scheme != "https" or not host:
        return f"[app] base_url ({base_url}) is not HTTPS, where Microsoft Graph delivers notifications"
    try:
        private = not ipaddress.ip_address(host).is_global
    except ValueError:
        private = host == "localhost" or "." not in host or host.endswith(_PRIVATE_SUFFIXES)
    if private:
        return f"[app] base_url ({base_url}) is not reachable from the internet, where Microsoft Graph sends from"
    return None


def parse_graph_time(value: str) -> datetime:
    """Graph's DateTimeOffset ("2026-12-06T10:00:00.1234567Z") as naive UTC."""
    text = value.strip().replace("Z", "+00:00")
    if "." in text:
        head, _, tail = text.partition(".")
        digits = "".join(c for c in tail if c.isdigit())
        text = f"{head}.{digits[:6].ljust(6, '0')}{tail[len(digits):]}"
    moment = datetime.fromisoformat(text)
    return (moment.astimezone(timezone.utc) if moment.tzinfo else moment).replace(tzinfo=None)


class SubscriptionManager:
    def __init__(self, db: Database, base_url: str, *, lifetime_minutes: int = LIFETIME_MINUTES,
                 allow_private_hosts: bool = False, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.base_url = base_url.rstrip("/")
        self.lifetime = timedelta(minutes=lifetime_minutes)
        self.renew_when_left = self.lifetime / 2
        self.clock = clock
        self.problem = None if allow_private_hosts and base_url.startswith("https://") \
            else public_https_problem(base_url)

    def maintain(self, account_id: int, mailbox: GraphMailbox, folder: str) -> PushState:
        reason = self.problem or (
            "Microsoft Graph sends no change notifications for a shared mailbox read with delegated "
            "permissions" if mailbox.shared else None)
        if reason:
            self.drop(account_id, mailbox)
            return PushState(False, False, f"{reason}: new mail is found by polling every few seconds.")
        resource = f"me/mailFolders('{mailbox.folder_id(folder)}')/messages"
        now = self.clock()
        with self.db.session() as session:
            event = notify_store.take_lifecycle(session, account_id)
            row = notify_store.get(session, account_id)
            current = (row.subscription_id, row.resource, row.expires_at, row.next_attempt_at,
                       row.last_error) if row else (None, "", None, None, None)
        sub_id, old_resource, expires, next_attempt, last_error = current
        read_now = event is not None
        if sub_id and (old_resource != resource or event == "subscriptionRemoved" or not expires or expires <= now):
            if event != "subscriptionRemoved":  # another folder, or expired by our clock: make sure it is gone
                self._delete_remote(mailbox, sub_id)
            sub_id = None
        if sub_id and event == "reauthorizationRequired":
            outcome, _ = self._call(mailbox, "POST", f"subscriptions/{quote(sub_id, safe='')}/reauthorize", None)
            sub_id = None if outcome == "gone" else sub_id
        if sub_id and expires - now < self.renew_when_left:
            sub_id = self._renew(account_id, mailbox, sub_id, now)
        if sub_id:
            return PushState(True, read_now)
        if next_attempt and next_attempt > now and old_resource == resource:
            return PushState(False, read_now, last_error or "")
        return self._create(account_id, mailbox, resource, now)

    def drop(self, account_id: int, mailbox: GraphMailbox | None) -> None:
        """No more notifications for this mailbox (disconnected, switched to IMAP, no public URL)."""
        with self.db.session() as session:
            row = notify_store.get(session, account_id)
            sub_id = row.subscription_id if row else None
            if row is not None:
                session.delete(row)
        if sub_id and mailbox is not None:
            self._delete_remote(mailbox, sub_id)

    # -- Graph calls ------------------------------------------------------------------------
    def _expiry(self, now: datetime) -> str:
        return (now + self.lifetime).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    def _create(self, account_id: int, mailbox: GraphMailbox, resource: str, now: datetime) -> PushState:
        secret, hashed = notify_store.new_client_state()
        body = {"changeType": "created", "resource": resource,
                "notificationUrl": self.base_url + NOTIFICATIONS_PATH,
                "lifecycleNotificationUrl": self.base_url + LIFECYCLE_PATH,
                "expirationDateTime": self._expiry(now), "clientState": secret,
                "latestSupportedTlsVersion": "v1_2"}
        try:
            created = mailbox.http.request("POST", "subscriptions", operation="subscribe", idempotent=False,
                                           json_body=body).json()
        except GraphError as exc:
            message = (f"Change notifications for {mailbox.address} could not be set up, so new mail is found by "
                       f"polling: {exc.message}")
            log.warning("%s", message)
            self._store(account_id, None, resource, "", None, now + max(RETRY_CREATE, timedelta(
                seconds=exc.retry_after or 0)), message)
            return PushState(False, True, message)
        self._store(account_id, str(created["id"]), resource, hashed,
                    parse_graph_time(str(created["expirationDateTime"])), None, None)
        log.info("%s: change notifications on (subscription %s)", mailbox.address, created["id"])
        return PushState(True, True)

    def _renew(self, account_id: int, mailbox: GraphMailbox, sub_id: str, now: datetime) -> str | None:
        """`sub_id` while it lives (renewed, or to be tried again next pass); None when Graph lost it."""
        outcome, body = self._call(mailbox, "PATCH", f"subscriptions/{quote(sub_id, safe='')}",
                                   {"expirationDateTime": self._expiry(now)})
        if outcome == "gone":
            return None
        if outcome == "ok" and body:
            with self.db.session() as session:
                row = notify_store.get(session, account_id)
                if row is not None and row.subscription_id == sub_id:
                    row.renewed_at = now
                    row.expires_at = parse_graph_time(str(body["expirationDateTime"]))
        return sub_id

    def _call(self, mailbox: GraphMailbox, method: str, path: str, body: dict | None) -> tuple[str, dict | None]:
        """("ok", answer), ("gone", None) when Graph no longer has the subscription (create anew), or
        ("failed", None): it lives on until it expires, and the next pass tries again."""
        try:
            response = mailbox.http.request(method, path, operation="subscribe", json_body=body)
        except GraphError as exc:
            if exc.status == 404:
                return "gone", None
            log.warning("%s: %s of its subscription failed: %s", mailbox.address, method, exc.message)
            return "failed", None
        return "ok", (response.json() if response.content else None)

    def _delete_remote(self, mailbox: GraphMailbox, sub_id: str) -> None:
        try:
            mailbox.http.request("DELETE", f"subscriptions/{quote(sub_id, safe='')}", operation="subscribe")
        except GraphError as exc:
            if exc.status != 404:
                log.info("%s: an old subscription could not be deleted (%s); it expires on its own",
                         mailbox.address, exc.code or exc.status)

    def _store(self, account_id: int, sub_id: str | None, resource: str, hashed: str,
               expires: datetime | None, next_attempt: datetime | None, error: str | None) -> None:
        with self.db.session() as session:
            row = notify_store.get(session, account_id)
            if row is None:
                row = GraphSubscription(account_id=account_id)
                session.add(row)
            row.subscription_id, row.resource, row.client_state_hash = sub_id, resource, hashed
            row.expires_at, row.next_attempt_at, row.last_error = expires, next_attempt, error
            row.renewed_at = None
