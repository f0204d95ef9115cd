"""The live workers: each beats every tick (`workers.heartbeat_at`) and removes its row when it stops.

A worker whose beat is older than `dead_after` is no longer counted when mailboxes are shared out
(leases.py); its mailboxes move once their leases have run out. Rows of workers dead for long (killed,
their machine gone) are removed by whichever worker notices.
"""
from __future__ import annotations

import os
import socket
from datetime import timedelta

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from ..models import Account, WorkerProcess, utcnow


class WorkerRegistry:
    def __init__(self, db, worker_id: str, dead_after: float) -> None:
        self.db, self.id, self.dead_after = db, worker_id, dead_after

    def beat(self, mailboxes: int, stopping: bool = False) -> None:
        now = utcnow()
        with self.db.session() as session:
            found = session.execute(update(WorkerProcess).where(WorkerProcess.id == self.id)
                                    .values(heartbeat_at=now, mailboxes=mailboxes, stopping=stopping)).rowcount
            if not found:
                session.execute(insert(WorkerProcess).values(id=self.id, hostname=socket.gethostname(), pid=os.getpid(),
                                                             started_at=now, heartbeat_at=now, mailboxes=mailboxes,
                                                             stopping=stopping))

    def live(self) -> list[str]:
        """The ids of the workers that beat recently and are not stopping, this one included."""
        since = utcnow() - timedelta(seconds=self.dead_after)
        with self.db.session() as session:
            found = list(session.scalars(select(WorkerProcess.id).where(WorkerProcess.heartbeat_at > since,
                                                                        WorkerProcess.stopping.is_(False))))
        return sorted(set(found) | {self.id})

    def forget_the_dead(self) -> None:
        since = utcnow() - timedelta(seconds=10 * self.dead_after)
        with self.db.session() as session:
            session.execute(delete(WorkerProcess).where(WorkerProcess.heartbeat_at < since))

    def leave(self) -> None:
        with self.db.session() as session:
            session.execute(delete(WorkerProcess).where(WorkerProcess.id == self.id))


def workers_overview(session: Session) -> list[dict]:
    """The workers table with, for each, the mailboxes it holds an unexpired lease on (for /api/v1/health)."""
    held = dict(session.execute(select(Account.lease_owner, func.count()).where(Account.lease_owner.is_not(None),
                                                                                 Account.lease_expires_at > utcnow())
                                .group_by(Account.lease_owner)).all())
    rows = session.scalars(select(WorkerProcess).order_by(WorkerProcess.id)).all()
    return [{"id": w.id, "hostname": w.hostname, "pid": w.pid, "started_at": w.started_at,
             "heartbeat_at": w.heartbeat_at, "stopping": w.stopping, "mailboxes": held.get(w.id, 0)} for w in rows]
