"""One seam where the network is swapped: `MailServers` opens a mailbox for the sync and a submitter for
the outbox, signed in with a token from tokens.py, over the transport the account records: "imap" (IMAP +
SMTP) or "graph" (Microsoft Graph: graph_open.py opens graph.py's GraphTransport and GraphSubmitter). A
Google mailbox is reached at [google] imap_host/smtp_host with Gmail's folder rules (mail/gmail.py).

The worker and the one-shot commands reach every mail server through `rt.servers`; a test puts a fake
there (tests/support/fake_mail.py) to run lease and backoff tests without Dovecot.
"""
from __future__ import annotations

import dataclasses
import logging

from sqlalchemy.orm import Session

from .. import tokens
from ..mail.smtp import SendFailure, SmtpSubmitter
from ..models import Account
from . import choice
from . import graph_open as graph_transport
from .base import Mailbox, MailboxError, Submitter
from .imap import ImapTransport

log = logging.getLogger(__name__)
SMTP_TIMEOUT_SECONDS = 60.0  # for each SMTP step, and for one whole message (see open_submitter)


class MailServers:
    def __init__(self, rt, imap_factory=None, gmail_factory=None) -> None:
        from ..mail.gmail import GmailMailbox
        from ..mail.imap import ImapMailbox

        self.rt = rt
        self.imap_factory = imap_factory or ImapMailbox  # a test may probe the IMAP calls with a subclass
        self.gmail_factory = gmail_factory or GmailMailbox

    def open_mailbox(self, session: Session, account: Account) -> Mailbox:
        """Signed in and ready; if the server refuses a cached token, it is refreshed once. Raises MailboxError."""
        self._check_transport(account)
        if account.transport == "graph":
            return graph_transport.open_mailbox(self.rt, session, account)
        graph_transport.forget_subscription(self.rt, session, account)  # switched back from Graph: once
        servers = self._servers(account)
        factory = self.gmail_factory if account.provider == "google" else self.imap_factory
        for force_refresh in (False, True):
            token = self._token(session, account, force_refresh)
            mailbox = None
            try:
                mailbox = ImapTransport(servers.imap_host, servers.imap_port, self.rt.settings.ca_bundle, factory)
                mailbox.idle_enabled = self.rt.settings.worker.idle
                mailbox.login(account.address, token)
            except MailboxError as exc:
                if mailbox is not None:
                    mailbox.close()
                if exc.auth_failed and not force_refresh:
                    log.info("%s: IMAP refused the cached token; refreshing it once", account.address)
                    continue
                if exc.auth_failed and account.provider == "microsoft":  # refused with a fresh token: IMAP is off
                    # for it; Graph is the way out
                    exc.message = choice.with_way_out(exc.message)
                raise
            return mailbox
        raise AssertionError("unreachable")

    def open_submitter(self, session: Session, account: Account) -> Submitter:
        """Signed in to SMTP; raises SendFailure."""
        self._check_transport(account)
        if account.status in ("disabled", "needs_reconnect") or account.token_cache_enc is None:
            raise SendFailure(f"{account.address} is not connected ({account.status.replace('_', ' ')}): reconnect "
                              "the mailbox, then Retry.", True, auth=True)
        if account.transport == "graph":
            return graph_transport.open_submitter(self.rt, session, account)
        try:
            token = tokens.access_token(session, self.rt, account)
        except tokens.TokenUnavailable as exc:
            raise SendFailure(exc.message, exc.fix_needed, auth=True) from None
        servers = self._servers(account)
        # A send must end well within its item's lease, or another worker's sent-folder lookup could run
        # before the server has filed the copy and queue it again: the lease is renewed right before each send.
        timeout = min(SMTP_TIMEOUT_SECONDS, self.rt.settings.worker.sending_lease_seconds / 3)
        submitter = SmtpSubmitter(servers.smtp_host, servers.smtp_port, self.rt.settings.ca_bundle, timeout=timeout)
        try:
            submitter.connect(account.address, token)
        except SendFailure as failure:
            submitter.dispose()
            if account.provider == "microsoft" and choice.is_dead_end(failure.message):  # SMTP AUTH off (535 5.7.139)
                raise dataclasses.replace(failure, message=choice.with_way_out(failure.message)) from None
            raise
        return submitter

    def _token(self, session: Session, account: Account, force_refresh: bool) -> str:
        try:
            return tokens.access_token(session, self.rt, account, force_refresh=force_refresh)
        except tokens.TokenUnavailable as exc:
            raise MailboxError(exc.message, reconnect=exc.reconnect, retry_after=exc.retry_after) from None

    def _servers(self, account: Account):
        """The [microsoft] or [google] settings with the account's imap_host/port and smtp_host/port."""
        return self.rt.settings.google if account.provider == "google" else self.rt.settings.microsoft

    @staticmethod
    def _check_transport(account: Account) -> None:
        if account.transport not in ("imap", "graph"):
            raise MailboxError(f"{account.address} is set to the {account.transport} transport, which this version "
                               "does not have yet: set it back to IMAP.", retry_after=3600)
