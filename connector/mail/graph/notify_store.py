"""The database side of Graph change notifications: the clientState secret, news, lifecycle events.

Microsoft calls the hooks (web/graph_hooks.py) without signing in, so what authorizes a notification
is its `clientState`: a random secret per subscription that only Graph and we know
(https://learn.microsoft.com/graph/change-notifications-delivery-webhooks#notifications). We keep its
SHA-256 only (a 256-bit random value needs no slow hash) and compare digests in constant time.

What a notification may do is small on purpose: mark "this mailbox has news" (`news_at`) or leave a
lifecycle event for the worker. It fetches nothing and calls nobody, so a flood costs one SELECT per
request and at most one write per mailbox until the worker takes the news (`take_news`).
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ...models import GraphSubscription, utcnow

log = logging.getLogger(__name__)

MAX_ITEMS = 1000  # notifications read from one POST; Graph batches far fewer
MAX_ID_LENGTH = 128
MAX_STATE_LENGTH = 128  # Graph's own limit for clientState
# Lifecycle events, the more demanding first: a removed subscription must be created again, a
# reauthorization needs a fresh token, a missed notification only a read of the folder.
LIFECYCLE_EVENTS = ("subscriptionRemoved", "reauthorizationRequired", "missed")


def new_client_state() -> tuple[str, str]:
    """(secret to give Graph once, its hash to store)."""
    secret = secrets.token_urlsafe(32)
    return secret, state_hash(secret)


def state_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def state_matches(stored_hash: str, received: Any) -> bool:
    if not stored_hash or not isinstance(received, str) or not received or len(received) > MAX_STATE_LENGTH:
        return False
    return hmac.compare_digest(state_hash(received), stored_hash)


@dataclass
class Received:
    accepted: int = 0
    ignored: int = 0
    accounts: set[int] = field(default_factory=set)  # mailboxes the worker should look at now


def _stronger(current: str | None, new: str) -> str:
    if current in LIFECYCLE_EVENTS and LIFECYCLE_EVENTS.index(current) <= LIFECYCLE_EVENTS.index(new):
        return current  # type: ignore[return-value]
    return new


def record(session: Session, items: Iterable[Any], lifecycle: bool, now: datetime | None = None) -> Received:
    """Note what a notification POST's `value` says, for items whose clientState matches."""
    now = now or utcnow()
    result = Received()
    wanted = []
    for item in list(items)[:MAX_ITEMS]:
        sub_id = item.get("subscriptionId") if isinstance(item, dict) else None
        if isinstance(sub_id, str) and 0 < len(sub_id) <= MAX_ID_LENGTH:
            wanted.append(item)
        else:
            result.ignored += 1
    ids = {item["subscriptionId"] for item in wanted}
    rows = {row.subscription_id: row for row in session.scalars(
        select(GraphSubscription).where(GraphSubscription.subscription_id.in_(ids)))} if ids else {}
    news: set[int] = set()
    events: dict[int, str] = {}
    refused: dict[str, int] = {}
    for item in wanted:
        row = rows.get(item["subscriptionId"])
        if row is None or not state_matches(row.client_state_hash, item.get("clientState")):
            refused[item["subscriptionId"]] = refused.get(item["subscriptionId"], 0) + 1
            result.ignored += 1
            continue
        event = item.get("lifecycleEvent")
        if lifecycle and event not in LIFECYCLE_EVENTS:
            result.ignored += 1
            continue
        result.accepted += 1
        result.accounts.add(row.account_id)
        if lifecycle:
            events[row.id] = _stronger(events.get(row.id), event)
        else:
            news.add(row.id)
    if refused:  # one line per request, whatever a stranger sends
        wrong = sorted(i for i in refused if i in rows)
        unknown = sorted(i for i in refused if i not in rows)
        if wrong:
            log.warning("ignored %d Graph notification(s) for subscription(s) %s: the clientState did not match",
                        sum(refused[i] for i in wrong), ", ".join(repr(i[:64]) for i in wrong[:3]))
        if unknown:
            log.info("ignored %d Graph notification(s) for %d subscription(s) no mailbox has, such as %r",
                     sum(refused[i] for i in unknown), len(unknown), unknown[0][:64])
    if news:
        session.execute(update(GraphSubscription).where(GraphSubscription.id.in_(news),
                                                        GraphSubscription.news_at.is_(None)).values(news_at=now))
    for row_id, event in events.items():
        row = next(r for r in rows.values() if r.id == row_id)
        row.lifecycle_event = _stronger(row.lifecycle_event, event)
        if row.news_at is None:
            row.news_at = now  # every lifecycle event is also a reason to read the folder
    return result


def take_news(session: Session, account_id: int) -> bool:
    """Whether notifications said there is news since the last call; clears it. Call it before the
    delta pass, so news arriving during the pass is kept for the next one. Reads first: polled mailboxes
    ask this every few seconds, and an UPDATE would take SQLite's write lock each time."""
    pending = session.scalar(select(GraphSubscription.id).where(GraphSubscription.account_id == account_id,
                                                                GraphSubscription.news_at.is_not(None)))
    if pending is None:
        return False
    done = session.execute(update(GraphSubscription).where(GraphSubscription.account_id == account_id,
                                                           GraphSubscription.news_at.is_not(None))
                           .values(news_at=None))
    return bool(done.rowcount)


def accounts_with_news(session: Session) -> list[int]:
    """Mailboxes whose notifications are not taken yet: what a worker in another process polls."""
    return list(session.scalars(select(GraphSubscription.account_id)
                                .where(GraphSubscription.news_at.is_not(None))
                                .order_by(GraphSubscription.news_at)))


def take_lifecycle(session: Session, account_id: int) -> str | None:
    """The pending lifecycle event of this mailbox's subscription, cleared."""
    row = get(session, account_id)
    if row is None or row.lifecycle_event is None:
        return None
    event = row.lifecycle_event
    session.execute(update(GraphSubscription).where(GraphSubscription.id == row.id,
                                                    GraphSubscription.lifecycle_event == event)
                    .values(lifecycle_event=None))
    return event


def get(session: Session, account_id: int) -> GraphSubscription | None:
    return session.scalar(select(GraphSubscription).where(GraphSubscription.account_id == account_id))
