"""Which mailboxes this worker should hold, and its leases on them.

Sharing out: every worker computes the same assignment from the same inputs (the syncable mailboxes and
the live workers, registry.py): each mailbox, in id order, goes to the first worker in its rendezvous
ranking (a hash of mailbox and worker) that still has room, with room for floor(N/W) or ceil(N/W)
mailboxes (the ceil ones to the first N mod W workers by id). So the load is even to within one, and a
joining or leaving worker moves few mailboxes: mostly those that rank it first.

Leases: a claim is a conditional UPDATE that also raises `lease_token` (the fencing token every commit
of a pass checks, sync/fence.py); renewals are one UPDATE per round for all held mailboxes; a release is
one UPDATE for all given ones.
"""
from __future__ import annotations

import hashlib
from datetime import timedelta

from sqlalchemy import or_, select, update

from ..models import Account, utcnow

SYNCABLE = (Account.status.in_(("connected", "error")), Account.token_cache_enc.is_not(None))


def assignment(account_ids: list[int], workers: list[str], _ranks: dict | None = None) -> dict[int, str]:
    """Mailbox id -> worker id, even to within one; the same on every worker for the same inputs."""
    workers = sorted(workers)
    if not workers:
        return {}
    ranks = _ranks if _ranks is not None else {}
    base, extra = divmod(len(account_ids), len(workers))
    room = {w: base + (1 if i < extra else 0) for i, w in enumerate(workers)}
    owners = {}
    for account_id in sorted(account_ids):
        for worker in sorted(workers, key=lambda w: _rank(ranks, account_id, w), reverse=True):
            if room[worker] > 0:
                room[worker] -= 1
                owners[account_id] = worker
                break
    return owners


def _rank(cache: dict, account_id: int, worker: str) -> int:
    key = (account_id, worker)
    if key not in cache:
        cache[key] = int.from_bytes(hashlib.blake2b(f"{worker}|{account_id}".encode(), digest_size=8).digest(), "big")
    return cache[key]


class MailboxLeases:
    def __init__(self, db, owner: str, lease_seconds: float) -> None:
        self.db, self.owner, self.seconds = db, owner, lease_seconds
        self._ranks: dict = {}

    def syncable(self, address: str | None = None) -> list[int]:
        query = select(Account.id).where(*SYNCABLE)
        if address:
            query = query.where(Account.address == address.strip().lower())
        with self.db.session() as session:
            return list(session.scalars(query.order_by(Account.id)))

    def mine(self, workers: list[str]) -> list[int]:
        """The syncable mailboxes this worker should hold now."""
        if len(self._ranks) > 200_000:
            self._ranks.clear()
        owners = assignment(self.syncable(), workers, self._ranks)
        return [account_id for account_id, worker in owners.items() if worker == self.owner]

    def claim(self, account_id: int, *, respect_backoff: bool = True) -> int | None:
        """Take the mailbox if nobody holds it (or the lease ran out); the fencing token, or None."""
        now = utcnow()
        conditions = [Account.id == account_id, *SYNCABLE,
                      or_(Account.lease_owner.is_(None), Account.lease_expires_at < now)]
        if respect_backoff:
            conditions.append(or_(Account.next_attempt_at.is_(None), Account.next_attempt_at <= now))
        with self.db.session() as session:
            taken = session.execute(update(Account).where(*conditions)
                                    .values(lease_owner=self.owner, lease_token=Account.lease_token + 1,
                                            lease_expires_at=now + timedelta(seconds=self.seconds))
                                    .execution_options(synchronize_session=False)).rowcount
            return session.scalar(select(Account.lease_token).where(Account.id == account_id)) if taken else None

    def renew(self, held: dict[int, int]) -> set[int]:
        """Extend every held lease with one UPDATE; returns the ids whose lease is no longer ours."""
        if not held:
            return set()
        now = utcnow()
        with self.db.session() as session:
            session.execute(update(Account).where(Account.lease_owner == self.owner)
                            .values(lease_expires_at=now + timedelta(seconds=self.seconds))
                            .execution_options(synchronize_session=False))
            still = dict(session.execute(select(Account.id, Account.lease_token)
                                         .where(Account.lease_owner == self.owner)).all())
        return {account_id for account_id, token in held.items() if still.get(account_id) != token}

    def release(self, account_ids) -> None:
        ids = list(account_ids)
        if not ids:
            return
        with self.db.session() as session:
            session.execute(update(Account).where(Account.id.in_(ids), Account.lease_owner == self.owner)
                            .values(lease_owner=None, lease_expires_at=None)
                            .execution_options(synchronize_session=False))
