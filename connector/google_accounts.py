"""Google mailboxes: the connect and reconnect rules of accounts.py for provider "google" (their access
tokens come from tokens.py like every mailbox's).

The same rights as for Microsoft (accounts.py): a plain connect only ever concerns the address of the
Google Account that signed in; an existing mailbox is touched only when the stored identity (the ID
token's `sub`, which Google never reassigns) is the one that signed in; its token is replaced only by
its owner or an admin (a reconnect keeps the owner), anyone else who signed in as it becomes a
member. A Google sign-in never touches a mailbox connected through Microsoft 365, and accounts.connect
never touches a Google one.
"""
from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from .accounts import ConnectRefused, Connection, add_member, can_manage
from .crypto import Vault
from .identity.google import GoogleSignIn
from .models import Account, User, utcnow

log = logging.getLogger(__name__)
PROVIDER = "google"


def connect(session: Session, vault: Vault, user: User, signed_in: GoogleSignIn, *,
            reconnect_id: int | None = None) -> Connection:
    """Create, reconnect or join the mailbox of a verified Google sign-in; raises ConnectRefused."""
    address = signed_in.email
    if reconnect_id is not None:
        _check_reconnect_target(session, user, signed_in, reconnect_id)
    account = session.scalar(select(Account).where(Account.address == address))
    if account is None:
        account = Account(address=address, connected_by_id=user.id, provider=PROVIDER)
        session.add(account)
        _store_sign_in(account, vault, signed_in)
        session.flush()
        log.info("Google mailbox %s connected by %s", address, user.email)
        return Connection(account, "created")
    if account.provider != PROVIDER:
        raise ConnectRefused(f"{address} is connected through Microsoft 365, not Google, so nothing was changed: its "
                             "owner or an admin can disconnect it there first.")
    if account.token_subject and account.token_subject != signed_in.subject:
        log.warning("connect refused: %s signed in as another Google Account than the stored owner of %s",
                    user.email, address)
        raise ConnectRefused(
            f"{address} is connected with another Google Account than the one you signed in with (Google identifies "
            "accounts by a permanent ID; an address can be renamed or given to someone else), so nothing was "
            "changed. Ask its owner or an admin.")
    if not can_manage(user, account):
        add_member(session, account, user)
        log.info("Google mailbox %s: %s signed in as it and is a member", address, user.email)
        return Connection(account, "joined")
    _store_sign_in(account, vault, signed_in)
    log.info("Google mailbox %s reconnected by %s", address, user.email)
    return Connection(account, "reconnected")


def _check_reconnect_target(session: Session, user: User, signed_in: GoogleSignIn, reconnect_id: int) -> None:
    target = session.get(Account, reconnect_id)
    if target is None:
        raise ConnectRefused("The mailbox to reconnect was removed meanwhile: nothing was changed.")
    if not can_manage(user, target):
        raise ConnectRefused(f"Only the owner of {target.address} or an admin can reconnect it: nothing was changed.")
    if target.provider != PROVIDER:
        raise ConnectRefused(f"{target.address} is connected through Microsoft 365: reconnect it with Microsoft.")
    if target.address != signed_in.email:
        raise ConnectRefused(f"You signed in as {signed_in.email}, but Reconnect was for {target.address}: nothing "
                             f"was changed. Click Reconnect again and choose {target.address} at Google.")


def _store_sign_in(account: Account, vault: Vault, signed_in: GoogleSignIn) -> None:
    account.display_name = signed_in.name or signed_in.email
    account.token_owner = signed_in.email
    account.token_subject = signed_in.subject
    account.tenant_id = signed_in.hosted_domain  # the Workspace domain (`hd`); empty for a Gmail account
    account.home_account_id = ""
    account.token_cache_enc = vault.encrypt(signed_in.tokens.to_json())
    account.status = "connected"
    account.last_error = None
    account.failure_count = 0
    account.next_attempt_at = None
    account.connected_at = utcnow()
