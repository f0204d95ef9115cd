"""Access tokens for a mailbox, by its provider and by what they are for: the one place the sync, the outbox
and the web app get a token from (none of them calls an identity provider's client directly).

Purposes: "mail" (IMAP and SMTP: `https://outlook.office.com/IMAP.AccessAsUser.All` and `SMTP.Send`)
and "graph" (Microsoft Graph mail; the Graph transport is not built yet). One token cannot carry
scopes of two resources, so each purpose is its own token in the mailbox's cache. Providers:
"microsoft" (msal, identity/microsoft.py) and "google" (authlib, identity/google.py: IMAP/SMTP only,
scope `https://mail.google.com/`; its stored JSON is the mailbox's `token_cache_enc` as msal's cache is).

A refresh may rotate the refresh token: the new cache is committed at once. Another worker (the sync
and the outbox of one mailbox can run in two processes) may have redeemed the same refresh token a
moment before: a refused refresh is retried with the cache stored meanwhile.
"""
from __future__ import annotations

from sqlalchemy.orm import Session

from . import google_registration, registration
from .crypto import DecryptionError
from .identity import google
from .identity.errors import Explained
from .identity.microsoft import GRAPH_SCOPES, MAIL_SCOPES, IdentityError
from .models import Account

GRAPH_SHARED_SCOPES = [scope + ".Shared" for scope in GRAPH_SCOPES]  # a delegate's shared mailbox over Graph
PURPOSES = {"mail": MAIL_SCOPES, "graph": GRAPH_SCOPES, "graph_shared": GRAPH_SHARED_SCOPES}


class TokenUnavailable(Exception):
    """No token now; `message` is for people. `reconnect`: the grant is gone (the account is marked);
    `retry_after`: seconds until it is worth trying again."""

    def __init__(self, message: str, *, reconnect: bool = False, retry_after: float | None = None,
                 fix_needed: bool = False) -> None:
        super().__init__(message)
        self.message, self.reconnect, self.retry_after = message, reconnect, retry_after
        self.fix_needed = fix_needed or reconnect  # a person must act (reconnect, restore the key): not worth retrying


def access_token(session: Session, rt, account: Account, purpose: str = "mail", *,
                 force_refresh: bool = False) -> str:
    """A token for `account` and `purpose`; `force_refresh` skips a cached access token (the server refused
    it before its expiry: revoked, or continuous access evaluation). Raises TokenUnavailable.

    Commits: a rotated refresh token, or the account's "needs reconnect" state, is saved at once."""
    if account.provider not in ("microsoft", "google"):
        raise TokenUnavailable(f"{account.address} is a {account.provider.title()} mailbox, which this version "
                               "cannot sign in to yet.", retry_after=3600)
    if account.provider == "google" and purpose != "mail":
        raise TokenUnavailable(f"{account.address} is a Google mailbox: it is reached over IMAP and SMTP only.",
                               retry_after=3600, fix_needed=True)
    try:
        identity, not_registered = _identity(session, rt, account)
    except DecryptionError as exc:  # the encryption key changed: say so, keep the worker running
        raise TokenUnavailable(str(exc), retry_after=300, fix_needed=True) from None
    session.commit()  # the refresh below is a network call: no transaction across it
    if identity is None:
        raise TokenUnavailable(not_registered, retry_after=60)
    scopes = [google.MAIL_SCOPE] if account.provider == "google" else PURPOSES[purpose]
    try:
        return refreshed_token(session, rt.vault, identity, account, scopes, force_refresh=force_refresh)
    except IdentityError as exc:
        # Google: the client's secret refused or a Workspace admin blocking the app; a person must act
        fix_needed = getattr(exc, "reason", "") in ("client_credentials", "admin_policy")
        raise TokenUnavailable(exc.explained.message, reconnect=exc.needs_reconnect, fix_needed=fix_needed,
                               retry_after=None if exc.needs_reconnect else 300 if fix_needed else 30) from None


def probe_token(session: Session, rt, account: Account, scopes: list[str]) -> tuple[str | None, str]:
    """A Microsoft token for `scopes` from the mailbox's stored sign-in, without marking the mailbox when none
    comes: for questions asked beside its own work (may it switch transport without a sign-in? can its old
    Graph subscription be deleted?). (token, "") or (None, the reason in words). A rotated refresh token is
    stored (the caller commits). Commits before the network call: no transaction across it."""
    if account.token_cache_enc is None:
        return None, "the mailbox has no stored sign-in"
    try:
        identity = registration.identity(session, rt.settings, rt.vault)
        if identity is None:
            return None, registration.NOT_REGISTERED
        cache = rt.vault.decrypt_text(account.token_cache_enc)
        session.commit()
        token, new_cache = identity.access_token(cache, account.home_account_id, scopes)
    except (IdentityError, DecryptionError) as exc:
        return None, exc.explained.message if isinstance(exc, IdentityError) else str(exc)
    if new_cache is not None:
        account.token_cache_enc = rt.vault.encrypt(new_cache)  # a rotated refresh token must not be lost
    return token, ""


def _identity(session: Session, rt, account: Account):
    """(the provider's client for this mailbox or None, the sentence when there is none). Raises DecryptionError."""
    if account.provider == "google":
        identity = google_registration.identity(session, rt.settings, rt.vault)
        if identity is not None:
            identity.hosted_domain = account.tenant_id or ""  # named in its errors (a Workspace admin's policy)
        return identity, google_registration.NOT_REGISTERED
    return registration.identity(session, rt.settings, rt.vault), registration.NOT_REGISTERED


def refreshed_token(session: Session, vault, identity, account: Account, scopes: list[str], *,
                    force_refresh: bool = False) -> str:
    """The token from the account's own cache (msal's, or Google's token JSON), refreshed if needed; raises IdentityError (when the grant is
    gone, the account is already marked "needs reconnect")."""
    from .accounts import mark_needs_reconnect

    for attempt in range(3):
        if account.token_cache_enc is None:
            raise _no_sign_in()
        used = account.token_cache_enc
        try:
            cache = vault.decrypt_text(used)
        except DecryptionError as exc:
            mark_needs_reconnect(account, str(exc))
            session.commit()
            raise _no_sign_in(str(exc)) from None
        try:
            token, new_cache = identity.access_token(cache, account.home_account_id, scopes,
                                                     force_refresh=force_refresh)
        except IdentityError as exc:
            if exc.needs_reconnect:
                session.refresh(account)
                session.commit()  # end the read: no transaction across the retry's network call
                if attempt < 2 and account.token_cache_enc not in (None, used):
                    continue  # rotated and saved by another worker meanwhile: use theirs
                mark_needs_reconnect(account, exc.explained.message)
                session.commit()
            raise
        if new_cache is not None:
            account.token_cache_enc = vault.encrypt(new_cache)
            session.commit()  # a rotated refresh token must never be lost
        return token
    raise AssertionError("unreachable")


def _no_sign_in(message: str = "The mailbox has no stored sign-in: reconnect it.") -> IdentityError:
    return IdentityError(Explained(message, None, True))
