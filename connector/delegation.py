"""Proof that a delegate may open a shared mailbox, made before anything about it is stored.

Typing an address proves nothing, so a shared mailbox is added only after the delegate's fresh token
really opens it: IMAP `AUTHENTICATE XOAUTH2` with `user=<shared address>`, then SELECT of the folder
to read, exactly what the worker does later. Exchange checks Full Access there (a delegate without it
fails at AUTHENTICATE, or at SELECT); Send As is only checked when mail is sent.
"""
from __future__ import annotations

import logging
from typing import Callable

from imapclient.exceptions import IMAPClientError

from .mail.imap import ImapError, ImapMailbox

log = logging.getLogger(__name__)

INBOX = "INBOX"


class AccessRefused(Exception):
    """The delegate's access is not proven; the message says what is missing and how to fix it."""


def no_full_access(delegate: str, shared: str) -> str:
    return (f"{delegate} has no Full Access to {shared}: an Exchange admin grants it with Add-MailboxPermission "
            f"-Identity {shared} -User {delegate} -AccessRights FullAccess, then connect again.")


def prove_full_access(host: str, port: int, ca_bundle: str | None, *, shared: str, delegate: str, token: str,
                      folder: str = INBOX, mailbox_factory: Callable[..., ImapMailbox] = ImapMailbox,
                      timeout: float = 30) -> None:
    """Sign in to `shared` with the delegate's `token` and open `folder`; raises AccessRefused.

    A folder other than INBOX that does not open is not a refusal when INBOX opens: the access is
    proven, and the sync reports the folder setting as it always does.
    """
    try:
        mailbox = mailbox_factory(host, port, ca_bundle, timeout=timeout)
    except ImapError as exc:
        raise AccessRefused(_unchecked(delegate, shared, str(exc))) from None
    try:
        try:
            mailbox.login(shared, token)
        except ImapError as exc:
            if exc.auth_failed:
                log.info("shared mailbox %s refused the sign-in of delegate %s", shared, delegate)
                raise AccessRefused(no_full_access(delegate, shared)) from None
            raise AccessRefused(_unchecked(delegate, shared, str(exc))) from None
        for candidate in dict.fromkeys([folder or INBOX, INBOX]):
            try:
                mailbox.select(candidate)
                return
            except ImapError:
                continue
        log.info("shared mailbox %s: delegate %s signed in but cannot open %s", shared, delegate, folder)
        raise AccessRefused(no_full_access(delegate, shared))
    except (OSError, IMAPClientError) as exc:
        raise AccessRefused(_unchecked(delegate, shared, f"the IMAP connection failed ({type(exc).__name__})")) \
            from None
    finally:
        mailbox.close()


def _unchecked(delegate: str, shared: str, reason: str) -> str:
    return (f"The access of {delegate} to {shared} could not be checked, so nothing was stored: {reason.rstrip('.')}. "
            "Try again in a few minutes.")
