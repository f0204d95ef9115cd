"""Connected mailboxes: who sees and who manages them, connecting and reconnecting (their tokens: tokens.py).

Rights: admins manage every mailbox; the user who connected a mailbox owns it (`connected_by_id`:
settings, reconnect, disconnect, members); members read and answer its tickets.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Literal

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .crypto import Vault
from .identity.microsoft import Connected
from .models import Account, AccountMember, User, utcnow
from .users import EMAIL_RE, normalise_email

log = logging.getLogger(__name__)


def visible_accounts_query(user: User):
    """Admins see every mailbox; agents those they connected or are members of."""
    query = select(Account).order_by(Account.address)
    if user.is_admin:
        return query
    member_of = select(AccountMember.account_id).where(AccountMember.user_id == user.id)
    return query.where(or_(Account.connected_by_id == user.id, Account.id.in_(member_of)))


def visible_accounts(session: Session, user: User) -> list[Account]:
    return list(session.scalars(visible_accounts_query(user)))


def visible_account_ids(session: Session, user: User) -> list[int] | None:
    """None means all (admin)."""
    if user.is_admin:
        return None
    return [a.id for a in visible_accounts(session, user)]


def get_visible_account(session: Session, user: User, account_id: int) -> Account | None:
    return session.scalar(visible_accounts_query(user).where(Account.id == account_id))


def can_manage(user: User, account: Account) -> bool:
    """Settings, reconnect, disconnect and members: admins and the mailbox's owner."""
    return user.is_admin or (account.connected_by_id is not None and account.connected_by_id == user.id)


def is_shared(account: Account) -> bool:
    """Connected by a delegate: the token's user is not the mailbox itself."""
    return bool(account.token_owner) and account.token_owner.lower() != account.address.lower()


def add_member(session: Session, account: Account, user: User) -> bool:
    """Let `user` read and answer the mailbox's tickets; False if they could already."""
    if user.is_admin or account.connected_by_id == user.id or session.get(AccountMember, (account.id, user.id)):
        return False
    session.add(AccountMember(account_id=account.id, user_id=user.id))
    return True


def remove_member(session: Session, account: Account, user_id: int) -> bool:
    row = session.get(AccountMember, (account.id, user_id))
    if row is None:
        return False
    session.delete(row)
    return True


def shared_address_or_none(value: str | None) -> str | None:
    address = normalise_email(value or "")
    if not address:
        return None
    if not EMAIL_RE.match(address):
        raise ValueError(f"'{value}' is not a mailbox address")
    return address


class ConnectRefused(Exception):
    """A sign-in that may not create or change this mailbox; the message says why and what to do."""


@dataclass(frozen=True)
class Connection:
    account: Account
    outcome: Literal["created", "reconnected", "joined"]  # joined: access proven, made a member only


def connect_committed(session: Session, store: Callable[[], Connection]) -> Connection:
    """Run a connect (`store`) and commit it, deciding once more if the same mailbox was created meanwhile.

    Two sign-ins of one mailbox at the same moment both find no row; the second commit then breaks the
    unique address. Rolled back and run again, it finds the first one's row and decides against it
    (join, reconnect or refuse) instead of showing an error. Raises ConnectRefused.
    """
    def attempt() -> Connection:
        result = store()
        session.commit()
        return result
    try:
        return attempt()
    except IntegrityError:
        session.rollback()
        return attempt()


def folder_to_prove(session: Session, address: str) -> str:
    """The folder a shared mailbox's proof opens: the one its sync reads, INBOX for a new one."""
    return session.scalar(select(Account.folder).where(Account.address == address)) or "INBOX"


def connect(session: Session, vault: Vault, user: User, connected: Connected, *,
            shared_address: str | None = None, access_proven: bool = False,
            reconnect_id: int | None = None) -> Connection:
    """Create, reconnect or join a mailbox after a completed sign-in; raises ConnectRefused.

    A plain connect only ever concerns the signed-in user's own mailbox (its address is their
    username), and an existing one only when the stored identity (tid + oid) is theirs. A shared
    mailbox needs `access_proven` (delegation.prove_full_access, made before this call) and may then
    change hands between delegates. The token is replaced only by the mailbox's owner or an admin (a
    reconnect keeps the owner); anyone else who proved their access becomes a member.
    """
    if shared_address and not access_proven:
        raise ValueError("a shared mailbox's access must be proven before it is connected")
    address = shared_address or connected.username
    if reconnect_id is not None:
        _check_reconnect_target(session, user, connected, address, reconnect_id)
    account = session.scalar(select(Account).where(Account.address == address))
    if account is None:
        account = Account(address=address, connected_by_id=user.id, provider="microsoft")
        session.add(account)
        _store_sign_in(account, vault, connected, shared=bool(shared_address))
        session.flush()
        log.info("mailbox %s connected by %s", address, user.email)
        return Connection(account, "created")
    if account.provider != "microsoft":
        raise ConnectRefused(f"{address} is connected through {account.provider.title()}, not Microsoft 365, so "
                             "nothing was changed: its owner or an admin can disconnect it there first.")
    if not shared_address and not _same_identity(account, connected):
        log.warning("connect refused: %s signed in as another identity than the stored owner of %s",
                    user.email, address)
        raise ConnectRefused(
            f"{address} is connected with another Microsoft account than the one you signed in with (Microsoft "
            "identifies people by tenant and object ID, not by name), so nothing was changed. If you have Full "
            "Access to it, use \"Connect a shared mailbox\"; otherwise ask its owner or an admin.")
    if not can_manage(user, account):
        add_member(session, account, user)
        log.info("mailbox %s: %s proved access and is a member", address, user.email)
        return Connection(account, "joined")
    _store_sign_in(account, vault, connected, shared=bool(shared_address))
    log.info("mailbox %s reconnected by %s", address, user.email)
    return Connection(account, "reconnected")


def _same_identity(account: Account, connected: Connected) -> bool:
    """Is the stored sign-in this person's? A row that never recorded one (before tid + oid were kept)
    accepts the user whose username is the address, which a plain connect guarantees."""
    if not account.token_subject:
        return not account.tenant_id or account.tenant_id == connected.tenant_id
    return account.token_subject == connected.object_id and account.tenant_id == connected.tenant_id


def _check_reconnect_target(session: Session, user: User, connected: Connected, address: str,
                            reconnect_id: int) -> None:
    target = session.get(Account, reconnect_id)
    if target is None:
        raise ConnectRefused("The mailbox to reconnect was removed meanwhile: nothing was changed.")
    if not can_manage(user, target):
        raise ConnectRefused(f"Only the owner of {target.address} or an admin can reconnect it: nothing was changed.")
    if target.address != address:
        raise ConnectRefused(f"You signed in as {connected.username}, but Reconnect was for {target.address}: "
                             f"nothing was changed. Click Reconnect again and sign in as "
                             f"{target.token_owner or target.address}.")


def _store_sign_in(account: Account, vault: Vault, connected: Connected, *, shared: bool) -> None:
    account.display_name = account.address if shared else connected.display_name
    account.token_owner = connected.username
    account.token_subject = connected.object_id
    account.tenant_id = connected.tenant_id
    account.home_account_id = connected.home_account_id
    account.token_cache_enc = vault.encrypt(connected.token_cache)
    account.status = "connected"
    account.last_error = None
    account.failure_count = 0
    account.next_attempt_at = None
    account.connected_at = utcnow()


def disconnect(session: Session, account: Account, by: User) -> None:
    """Drop the tokens and stop syncing; the mail already imported stays."""
    account.token_cache_enc = None
    account.status = "disabled"
    account.last_error = f"Disconnected by {by.email}: reconnect to resume."
    account.lease_owner = None
    account.lease_expires_at = None
    log.info("mailbox %s disconnected by %s", account.address, by.email)


def mark_needs_reconnect(account: Account, reason: str) -> None:
    account.status = "needs_reconnect"
    account.last_error = reason
