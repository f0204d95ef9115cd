"""Reading an installation's database back, for counting only: incoming articles by Message-ID, how many
bodies are extracted, outbox states, and which worker holds which mailbox's lease.

Its own engine without a pool: every look is a short read transaction (SQLite runs in WAL mode, so the
readers never block the worker's writes).
"""
from __future__ import annotations

import collections
from datetime import datetime, timezone

from sqlalchemy import create_engine, func, select
from sqlalchemy.pool import NullPool

from connector.models import Account, Article, OutboxItem


class Observer:
    def __init__(self, database_url: str) -> None:
        self.engine = create_engine(database_url, poolclass=NullPool)

    def close(self) -> None:
        self.engine.dispose()

    def incoming(self, account_id: int) -> int:
        """Incoming articles of a mailbox (the import's progress)."""
        with self.engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(Article)
                               .where(Article.account_id == account_id, Article.direction == "in"))

    def action_state(self, account_id: int) -> tuple[int, bool]:
        """(incoming articles committed, whether some committed mail's post-import move or delete is not yet
        known to have run: `last_uid` past `post_import_done_uid`, the worker is inside the action's phase,
        sync/post_import.py), in one short read."""
        with self.engine.connect() as conn:
            committed = conn.scalar(select(func.count()).select_from(Article)
                                    .where(Article.account_id == account_id, Article.direction == "in"))
            last, done = conn.execute(select(Account.last_uid, Account.post_import_done_uid)
                                      .where(Account.id == account_id)).one()
        return committed, (last or 0) > (done or 0)

    def incoming_by_message_id(self, account_ids: list[int]) -> collections.Counter[tuple[int, str]]:
        """(account id, Message-ID) -> how many incoming articles carry it."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(Article.account_id, Article.message_id, func.count())
                                .where(Article.account_id.in_(account_ids), Article.direction == "in")
                                .group_by(Article.account_id, Article.message_id)).all()
        return collections.Counter({(account_id, mid): n for account_id, mid, n in rows})

    def bodies(self, account_id: int) -> dict[str, str]:
        """Message-ID -> body text of a mailbox's incoming articles."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(Article.message_id, Article.body_text)
                                .where(Article.account_id == account_id, Article.direction == "in")).all()
        return {mid: text or "" for mid, text in rows}

    def extracted(self, account_id: int) -> int:
        """Incoming articles whose body is in the database (a big import stores headers first)."""
        with self.engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(Article)
                               .where(Article.account_id == account_id, Article.direction == "in",
                                      Article.body_text != ""))

    def outbox(self) -> dict[str, str]:
        """Message-ID of each queued reply -> its outbox state (queued, sending, sent, failed)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(Article.message_id, OutboxItem.state)
                                .join(Article, Article.id == OutboxItem.article_id)).all()
        return dict(rows)

    def outbox_row(self, message_id: str) -> dict:
        """The outbox row of one reply, to explain a finding (state, attempts, the server's answer, the error)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(OutboxItem.id, OutboxItem.state, OutboxItem.attempts, OutboxItem.server_reply,
                                      OutboxItem.last_error)
                               .join(Article, Article.id == OutboxItem.article_id)
                               .where(Article.message_id == message_id)).first()
        return dict(row._mapping) if row is not None else {}

    def sent(self) -> int:
        with self.engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(OutboxItem).where(OutboxItem.state == "sent"))

    def leases(self) -> dict[int, tuple[str | None, bool]]:
        """Mailbox id -> (the worker named in its lease, whether that lease is still current)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(Account.id, Account.lease_owner, Account.lease_expires_at)).all()
        now = datetime.now(timezone.utc).replace(tzinfo=None)  # the product stores naive UTC
        return {account_id: (owner, expires is not None and expires > now) for account_id, owner, expires in rows}

    def lease_holders(self) -> dict[int, str | None]:
        """Mailbox id -> the worker whose lease is current ("host:pid:name"), None if nobody's is."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(Account.id, Account.lease_owner, Account.lease_expires_at)).all()
        now = datetime.now(timezone.utc).replace(tzinfo=None)  # the product stores naive UTC
        return {account_id: owner if owner and expires is not None and expires > now else None
                for account_id, owner, expires in rows}


def pid_of(worker_id: str | None) -> int | None:
    """The pid in a worker id ("host:pid:name")."""
    if not worker_id:
        return None
    parts = worker_id.split(":")
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None
