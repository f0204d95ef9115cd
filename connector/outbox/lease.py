"""An outbox item's lease, fenced like a mailbox's (sync/fence.py): every claim raises `outbox.lease_token`,
and every later write of the claimer is a conditional UPDATE on (owner, token), so a worker whose claim was
taken over (its lease ran out and the item was recovered) cannot mark it sent, failed or queued."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from ..models import OutboxItem, utcnow


def claim(session: Session, item_id: int, owner: str, seconds: float, *, stale: bool = False) -> int | None:
    """Take the item (a queued one that is due, or with `stale` one left "sending" whose lease ran out);
    commits; the fencing token, or None if someone else has it."""
    now = utcnow()
    if stale:
        condition = [OutboxItem.state == "sending", OutboxItem.lease_expires_at < now]
        values = {}
    else:
        condition = [OutboxItem.state == "queued", OutboxItem.next_attempt_at <= now,
                     or_(OutboxItem.lease_owner.is_(None), OutboxItem.lease_expires_at < now)]
        values = {"state": "sending"}
    taken = session.execute(update(OutboxItem).where(OutboxItem.id == item_id, *condition)
                            .values(lease_owner=owner, lease_token=OutboxItem.lease_token + 1,
                                    lease_expires_at=now + timedelta(seconds=seconds), **values)
                            .execution_options(synchronize_session=False)).rowcount
    token = session.scalar(select(OutboxItem.lease_token).where(OutboxItem.id == item_id)) if taken else None
    session.commit()
    return token


def write(session: Session, item_id: int, owner: str, token: int, **values) -> bool:
    """Set `values` if the claim is still ours (same transaction, committed); False when it was taken over."""
    done = session.execute(update(OutboxItem).where(OutboxItem.id == item_id, OutboxItem.lease_owner == owner,
                                                    OutboxItem.lease_token == token)
                           .values(**values).execution_options(synchronize_session=False)).rowcount
    session.commit()
    return done == 1


def renew(session: Session, item_id: int, owner: str, token: int, seconds: float) -> bool:
    """Right before a submission: a whole lease ahead for it, if the claim is still ours (not recovered by
    another worker, whose claim raised the token)."""
    now = utcnow()
    done = session.execute(update(OutboxItem).where(OutboxItem.id == item_id, OutboxItem.lease_owner == owner,
                                                    OutboxItem.lease_token == token)
                           .values(lease_expires_at=now + timedelta(seconds=seconds))
                           .execution_options(synchronize_session=False)).rowcount
    session.commit()
    return done == 1
