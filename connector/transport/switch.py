"""Switching a mailbox between IMAP + SMTP and Microsoft Graph.

The stored sign-in is tried first: Microsoft's refresh tokens work for every resource the user (or an
admin, for the tenant) consented to, so a mailbox whose app already lists the other transport's
permissions switches without a sign-in. Otherwise (consent missing: AADSTS65001) the caller starts a
sign-in that asks for the new transport's scopes, and the switch is applied when it comes back.

Applying a switch starts the folder over in the new transport's numbering (UIDs and a delta cursor do not
translate); Message-ID dedup keeps that free of duplicates, and over Graph mails imported before are not
even downloaded (transport/graph.py). The worker holding the mailbox loses its lease and lets go after
its current batch (rolled back, fenced), then the mailbox is claimed again and opened over the new transport.
"""
from __future__ import annotations

import logging

from sqlalchemy import update
from sqlalchemy.orm import Session

from ..accounts import is_shared
from ..models import Account, OutboxItem, utcnow
from ..tokens import PURPOSES, probe_token
from .choice import TRANSPORTS, token_purpose

log = logging.getLogger(__name__)


def apply(account: Account, transport: str) -> None:
    """Record the switch (the caller commits)."""
    if account.transport == transport:
        return
    account.transport = transport
    account.uidvalidity, account.last_uid, account.sync_cursor = None, 0, None
    account.lease_owner, account.lease_expires_at = None, None
    if account.status == "error":
        account.status = "connected"
    account.last_error, account.failure_count, account.next_attempt_at = None, 0, None


def try_switch(session: Session, rt, account: Account, transport: str) -> tuple[bool, str]:
    """(True, "") when switched with the stored sign-in; (False, why) when a sign-in is needed."""
    if transport not in TRANSPORTS:
        raise ValueError(f"unknown transport {transport!r}")
    if account.provider != "microsoft":
        raise ValueError("only Microsoft 365 mailboxes have a choice of transport")
    token, why = probe_token(session, rt, account, PURPOSES[token_purpose(transport, is_shared(account))])
    if token is None:
        log.info("%s: no %s token from the stored sign-in (%s); a sign-in is needed", account.address,
                 transport, why[:200])
        return False, why
    apply(account, transport)
    return True, ""


def requeue_dead_ends(session: Session, account: Account) -> int:
    """Replies that failed only because SMTP AUTH is off go out again over the new transport."""
    rows = session.execute(update(OutboxItem).where(OutboxItem.account_id == account.id,
                                                    OutboxItem.state == "failed",
                                                    OutboxItem.last_error.like("%5.7.139%"))
                           .values(state="queued", next_attempt_at=utcnow(), last_error=None)
                           .execution_options(synchronize_session=False)).rowcount
    return rows or 0


__all__ = ["apply", "requeue_dead_ends", "try_switch"]
