"""Connected mailboxes: who sees them, connecting and reconnecting, tokens for the workers."""
from __future__ import annotations

import logging

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from .crypto import DecryptionError, Vault
from .identity.errors import Explained
from .identity.microsoft import Connected, IdentityError, MicrosoftIdentity
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


def shared_address_or_none(value: str | None) -> str | None:
    address = normalise_email(value or "")
    if not address:
        return None
    if not EMAIL_RE.match(address):
        raise ValueError(f"'{value}' is not a mailbox address")
    return address


def connect(session: Session, vault: Vault, user: User, connected: Connected,
            shared_address: str | None = None) -> tuple[Account, bool]:
    """Add the mailbox, or reconnect it if we know it already. Returns (account, created)."""
    address = shared_address or connected.username
    account = session.scalar(select(Account).where(Account.address == address))
    created = account is None
    if created:
        account = Account(address=address, connected_by_id=user.id)
        session.add(account)
    account.display_name = connected.display_name if not shared_address else address
    account.token_owner = connected.username
    account.tenant_id = connected.tenant_id
    account.home_account_id = connected.home_account_id
    account.token_cache_enc = vault.encrypt(connected.token_cache)
    account.status = "connected"
    account.last_error = None
    account.failure_count = 0
    account.next_attempt_at = None
    account.connected_at = utcnow()
    session.flush()
    if not user.is_admin and not session.get(AccountMember, (account.id, user.id)) \
            and account.connected_by_id != user.id:
        session.add(AccountMember(account_id=account.id, user_id=user.id))
    log.info("mailbox %s %s by %s", address, "connected" if created else "reconnected", user.email)
    return account, created


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


def mail_access_token(session: Session, vault: Vault, identity: MicrosoftIdentity, account: Account, *,
                      force_refresh: bool = False) -> str:
    """An IMAP/SMTP access token for the mailbox; a rotated refresh token is committed at once.

    `force_refresh` skips the cached access token: for when the server refused it before its expiry
    (revoked, or continuous access evaluation).

    Raises IdentityError; when the grant is gone, the account is already marked "needs reconnect".
    """
    if account.token_cache_enc is None:
        raise _no_sign_in()
    try:
        cache = vault.decrypt_text(account.token_cache_enc)
    except DecryptionError as exc:
        mark_needs_reconnect(account, str(exc))
        session.commit()
        raise _no_sign_in(str(exc)) from None
    try:
        token, new_cache = identity.mail_token(cache, account.home_account_id, force_refresh=force_refresh)
    except IdentityError as exc:
        if exc.needs_reconnect:
            mark_needs_reconnect(account, exc.explained.message)
            session.commit()
        raise
    if new_cache is not None:
        account.token_cache_enc = vault.encrypt(new_cache)
        session.commit()  # a rotated refresh token must never be lost
    return token


def _no_sign_in(message: str = "The mailbox has no stored sign-in: reconnect it.") -> IdentityError:
    return IdentityError(Explained(message, None, True))
