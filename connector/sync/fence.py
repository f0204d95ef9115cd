"""The lease check that goes into every commit of a pass (a fencing token, not only a timestamp).

A worker claims a mailbox with a conditional UPDATE that raises `accounts.lease_token`
(worker/leases.py). Each commit of a pass first runs `UPDATE accounts SET lease_expires_at = now + lease
WHERE id = M AND lease_owner = me AND lease_token = T`, in the same transaction: if another worker claimed
the mailbox since (its claim raised the token), no row matches, the transaction is rolled back and the
pass stops (`LeaseLost`). On PostgreSQL the UPDATE locks the row until the commit, so a claim cannot slip
in between (the claim waits, then sees the lease extended); on SQLite the transaction holds the database's
write lock from its start.

The token, not the clock, decides: a lease that ran out but that nobody took over is still safe to commit
under (nobody else read the mailbox meanwhile), and the commit extends it. A slow machine therefore never
loses a mailbox to its own pause, only to another worker's claim.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from ..models import Account, utcnow
from .errors import LeaseLost


@dataclass(frozen=True)
class Fence:
    account_id: int
    owner: str
    token: int
    seconds: float = 120.0  # the lease's length: each commit extends it, so a long pass keeps its mailbox

    def commit(self, session: Session) -> None:
        """Commit if the lease is still ours; else roll back and raise LeaseLost."""
        held = session.execute(update(Account)
                               .where(Account.id == self.account_id, Account.lease_owner == self.owner,
                                      Account.lease_token == self.token)
                               .values(lease_expires_at=utcnow() + timedelta(seconds=self.seconds))
                               .execution_options(synchronize_session=False)).rowcount
        if held != 1:
            session.rollback()
            raise LeaseLost(f"mailbox {self.account_id}: the lease (token {self.token}) is no longer {self.owner}'s")
        session.commit()


class Unfenced:
    """For a pass without a lease: tests and tools that run one mailbox by hand, never the worker."""

    @staticmethod
    def commit(session: Session) -> None:
        session.commit()
