"""The one-shot modes: `connector sync [--account A] --once` and `connector worker --burst`. They take any
free mailbox (no sharing out: they are short-lived), with the same fenced leases and the same
`MailboxRunner.run_once` as the worker's threads."""
from __future__ import annotations

import logging

from sqlalchemy import select

from .. import extract
from ..models import Account
from ..sync.fence import Fence
from .leases import MailboxLeases
from .mailbox import MailboxRunner

log = logging.getLogger(__name__)


def sync_once(rt, owner: str, address: str | None = None, should_stop=lambda: False) -> tuple[bool, list[str]]:
    """One pass over every connected mailbox (or one); (all ok, a line per mailbox)."""
    leases = MailboxLeases(rt.db, owner, rt.settings.worker.lease_seconds)
    ids = leases.syncable(address)
    if address and not ids:
        with rt.db.session() as session:
            known = session.scalar(select(Account).where(Account.address == address.strip().lower()))
            state = f"is {known.status.replace('_', ' ')}" if known else "is not connected"
        return False, [f"{address}: {state}"]
    lines: list[str] = []
    ok = True
    for account_id in ids:
        name = _address(rt, account_id)
        token = leases.claim(account_id, respect_backoff=False)
        if token is None:
            lines.append(f"{name}: busy in another worker, skipped")
            continue
        runner = MailboxRunner(rt, account_id, Fence(account_id, owner, token, rt.settings.worker.lease_seconds), should_stop)
        try:
            outcome = runner.run_once()
        finally:
            runner.close()
            leases.release([account_id])
        if outcome == "ok":
            lines.append(f"{name}: {runner.last_result.summary()}")
            ok = ok and not runner.last_result.failed
        else:
            lines.append(f"{name}: FAILED: {_last_error(rt, account_id) if outcome == 'failed' else 'lease lost'}")
            ok = False
    extracted = extract.extract_pending(rt.db, max_size=rt.settings.mail.max_message_bytes, account_ids=ids,
                                        should_stop=should_stop, budget=rt.settings.mail.parse_timeout_seconds)
    if extracted:
        lines.append(f"bodies and attachments extracted for {extracted} mails imported from their headers")
    return ok, lines


def run_burst(rt, owner: str) -> bool:
    from ..outbox import Sender

    ok, lines = sync_once(rt, owner)
    for line in lines:
        log.info(line)
    sent_ok = Sender(rt, owner).send_due(should_stop=lambda: False)
    return ok and sent_ok


def _address(rt, account_id: int) -> str:
    with rt.db.session() as session:
        account = session.get(Account, account_id)
        return account.address if account else f"mailbox {account_id}"


def _last_error(rt, account_id: int) -> str:
    with rt.db.session() as session:
        account = session.get(Account, account_id)
        return account.last_error if account else "the mailbox was removed"
