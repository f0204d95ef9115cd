"""A mailbox whose pass failed: its state for people, and when to try again (backoff, or what the server asked)."""
from __future__ import annotations

import logging
from datetime import timedelta

from ..models import Account, utcnow
from ..sync import LeaseLost, SyncError

log = logging.getLogger(__name__)
MAX_BACKOFF = 300.0


def backoff_seconds(failures: int, retry_after: float | None) -> float:
    if retry_after:
        return float(retry_after)
    return min(MAX_BACKOFF, 2.0 ** max(0, failures - 1))


def record_failure(rt, account_id: int, exc: SyncError, fence) -> None:
    """Written only while the lease is still this worker's (fenced)."""
    with rt.db.sessionmaker() as session:
        account = session.get(Account, account_id)
        if account is None:
            return
        account.failure_count = (account.failure_count or 0) + 1
        if exc.reconnect:
            account.status = "needs_reconnect"
            account.last_error = str(exc)
            log.warning("mailbox %s needs reconnect: %s", account.address, exc)
        else:
            if account.status != "disabled":
                # One dropped connection is routine; say "error" when it keeps failing.
                if account.failure_count >= 2 or exc.retry_after:
                    account.status = "error"
                account.last_error = str(exc)
            delay = backoff_seconds(account.failure_count, exc.retry_after)
            account.next_attempt_at = utcnow() + timedelta(seconds=delay)
            log.warning("mailbox %s: %s (retry in %.0f s)", account.address, exc, delay)
        try:
            fence.commit(session)
        except LeaseLost:
            pass  # another worker has the mailbox now; its own passes say how it goes
