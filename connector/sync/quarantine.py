"""A mail that fails to import is tried again at the next passes; after three failures, or at once when its
parse overran the time budget (parsing is deterministic: a retry takes as long again), it is quarantined with
its raw bytes and the sync moves past it. Admins can import it again from the quarantine page."""
from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import parse_pool
from ..bulk_insert import store_blob
from ..models import Account, ImportFailure, utcnow
from .errors import PassResult

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3


def record_failure(session: Session, account: Account, uid: int, raw: bytes, exc: BaseException,
                   result: PassResult, key: str | None = None) -> str:
    """Count a failed import of `uid`; "quarantined" (move on) or "retry" (keep the high-water mark before it).

    `key` is the transport's own id of the mail when its numbers are not stable (Microsoft Graph numbers
    the mails of each pass afresh): the failures are then counted by that id, so one mail's failures are
    never counted against another that gets its number in a later pass."""
    log.warning("%s: UID %s failed to import: %s: %s", account.address, uid, type(exc).__name__, exc)
    if key is not None:
        where = (ImportFailure.message_key == key,)
    else:
        where = (ImportFailure.uidvalidity == account.uidvalidity, ImportFailure.uid == uid)
    row = session.scalar(select(ImportFailure).where(ImportFailure.account_id == account.id, *where))
    if row is None:
        row = (ImportFailure(account_id=account.id, message_key=key, attempts=0) if key is not None
               else ImportFailure(account_id=account.id, uidvalidity=account.uidvalidity, uid=uid, attempts=0))
        session.add(row)
    row.attempts += 1
    row.last_error = f"{type(exc).__name__}: {exc}"[:2000]
    row.updated_at = utcnow()
    if row.attempts >= MAX_ATTEMPTS or isinstance(exc, parse_pool.ParseTimeout):
        row.quarantined = True
        row.raw_sha256 = store_blob(session, raw)
        result.quarantined += 1
        log.error("%s: UID %s quarantined after %s attempt(s): %s", account.address, uid, row.attempts, exc)
        return "quarantined"
    result.failed += 1
    return "retry"
