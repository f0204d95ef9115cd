"""After a crash, or a connection that broke after the message was handed over (the sender leaves such an
item "sending": SendFailure.maybe_sent): an item found "sending" once its lease ran out may or may not
have reached the server.
Exchange files SMTP-submitted mail in the sent folder, so the mailbox is asked for its Message-ID: found
means sent; not found means it is queued again; no answer (the server or the token unavailable) means
ask again later. The recovering worker claims the item first (fenced, lease.py), so two workers never
recover, or send, the same item."""
from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import Account, Article, OutboxItem, utcnow
from ..transport.base import MailboxError
from . import lease

log = logging.getLogger(__name__)


def recover_stale(rt, session: Session, owner: str) -> int:
    """Settle every stale "sending" item; returns how many were settled."""
    stale = session.scalars(select(OutboxItem.id).where(OutboxItem.state == "sending",
                                                        OutboxItem.lease_expires_at < utcnow())).all()
    session.commit()
    settled = 0
    for item_id in stale:
        token = lease.claim(session, item_id, owner, rt.settings.worker.sending_lease_seconds, stale=True)
        if token is None:
            continue  # another worker is on it
        found = in_sent_folder(rt, session, item_id)
        if found is None:
            continue  # cannot tell now; the lease runs out and someone looks again
        values = dict(state="sent", sent_at=utcnow(), last_error=None,
                      server_reply="found in the sent folder: the server had taken it") \
            if found else dict(state="queued", next_attempt_at=utcnow())
        if lease.write(session, item_id, owner, token, lease_owner=None, lease_expires_at=None, **values):
            settled += 1
            log.info("outbox item %s left \"sending\": %s", item_id, "was sent" if found else "queued again")
    return settled


def in_sent_folder(rt, session: Session, item_id: int) -> bool | None:
    item = session.get(OutboxItem, item_id)
    account = session.get(Account, item.account_id) if item else None
    message_id = session.scalar(select(Article.message_id).where(Article.id == item.article_id)) if item else None
    if account is None or not message_id:
        session.commit()
        return None
    try:
        mailbox = rt.servers.open_mailbox(session, account)
    except MailboxError:
        return None
    try:
        return mailbox.find_message_id(message_id)
    except Exception:  # noqa: BLE001 - unknown; try again later
        return None
    finally:
        mailbox.close()
