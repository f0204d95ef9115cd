"""Sending: due items go out over the account's transport, one connection per mailbox per round.

Exactly once: an item is claimed ("sending", a fenced lease: lease.py) before submission, its lease is
renewed right before the message is handed over, and it is marked "sent" right after the server's
answer, by a write that holds only if the claim is still this worker's. A crash in between leaves it
"sending" for recovery.py. The one window no protocol closes: the server took the message and the
worker died before the commit, or the connection broke after the message was handed over and before
the server's answer; the sent-folder lookup decides then, and nothing else may: an item whose DATA
began is never queued again by the sender itself (SendFailure.maybe_sent leaves it "sending").
"""
from __future__ import annotations

import logging
from typing import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..mail.smtp import SendFailure
from ..models import Account, OutboxItem, utcnow
from . import lease
from .queue import backoff
from .recovery import recover_stale

log = logging.getLogger(__name__)
MAX_TRANSIENT_ATTEMPTS = 12  # about a day with the backoff


class Sender:
    def __init__(self, rt, worker_id: str) -> None:
        self.rt = rt
        self.worker_id = worker_id
        self.lease_seconds = rt.settings.worker.sending_lease_seconds

    def send_due(self, should_stop: Callable[[], bool]) -> bool:
        """Send everything due; returns False if anything failed for good in this round."""
        ok = True
        with self.rt.db.sessionmaker() as session:
            recover_stale(self.rt, session, self.worker_id)
            due = session.execute(select(OutboxItem.id, OutboxItem.account_id)
                                  .where(OutboxItem.state == "queued", OutboxItem.next_attempt_at <= utcnow())
                                  .order_by(OutboxItem.account_id, OutboxItem.id)).all()
            session.commit()
            by_account: dict[int, list[int]] = {}
            for item_id, account_id in due:
                by_account.setdefault(account_id, []).append(item_id)
            for account_id, item_ids in by_account.items():
                if should_stop():
                    break
                ok = self._send_for_account(session, account_id, item_ids, should_stop) and ok
        return ok

    def _send_for_account(self, session: Session, account_id: int, item_ids: list[int],
                          should_stop: Callable[[], bool]) -> bool:
        account = session.get(Account, account_id)
        submitter = None
        ok = True
        try:
            for item_id in item_ids:
                if should_stop():
                    break
                token = lease.claim(session, item_id, self.worker_id, self.lease_seconds)
                if token is None:
                    continue
                item = session.get(OutboxItem, item_id)
                session.refresh(item)
                session.commit()  # the network below: hold no transaction while talking to the server
                try:
                    if submitter is None:
                        submitter = self.rt.servers.open_submitter(session, account)
                    if not lease.renew(session, item_id, self.worker_id, token, self.lease_seconds):
                        log.warning("outbox item %s: claim taken over before sending; not sent here", item_id)
                        continue
                    reply = submitter.send(item.mail_from, [r.strip() for r in item.rcpt_to.split(",") if r.strip()],
                                           item.raw)
                except SendFailure as failure:
                    if failure.maybe_sent:
                        self._maybe_sent(session, item, token, failure)
                    else:
                        ok = self._failed(session, item, token, failure) and ok
                    if submitter is not None and (failure.auth or not submitter.connected):
                        submitter.dispose()
                        submitter = None
                    continue
                self._sent(session, item, token, reply)
                log.info("sent outbox item %s from %s", item_id, account.address)
        finally:
            if submitter is not None:
                submitter.dispose()
        return ok

    def _sent(self, session: Session, item: OutboxItem, token: int, reply: str) -> None:
        if not lease.write(session, item.id, self.worker_id, token, state="sent", sent_at=utcnow(),
                           server_reply=(reply or "250 OK")[:1000], attempts=item.attempts + 1, last_error=None,
                           lease_owner=None, lease_expires_at=None):
            log.error("outbox item %s was sent, but its claim had been taken over meanwhile; the recovering "
                      "worker finds it in the sent folder", item.id)

    def _maybe_sent(self, session: Session, item: OutboxItem, token: int, failure: SendFailure) -> None:
        """The server may have taken it: it stays "sending" under the lease renewed before the submission,
        and once that runs out recovery.py asks the sent folder (found: sent; not found: queued again)."""
        log.warning("outbox item %s: %s", item.id, failure.message)
        lease.write(session, item.id, self.worker_id, token, attempts=item.attempts + 1, last_error=failure.message,
                    server_reply=None)

    def _failed(self, session: Session, item: OutboxItem, token: int, failure: SendFailure) -> bool:
        attempts = item.attempts + 1
        values = dict(attempts=attempts, last_error=failure.message, server_reply=failure.reply or None,
                      lease_owner=None, lease_expires_at=None)
        if failure.permanent or attempts >= MAX_TRANSIENT_ATTEMPTS:
            values["state"] = "failed"
            log.warning("outbox item %s failed: %s", item.id, failure.message)
        else:
            values.update(state="queued", next_attempt_at=utcnow() + backoff(attempts))
            log.info("outbox item %s will be retried: %s", item.id, failure.message)
        lease.write(session, item.id, self.worker_id, token, **values)
        return not failure.permanent
