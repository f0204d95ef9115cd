"""The durable outbox: a reply is stored with its article before any network call, then sent by the
worker with retries and backoff; permanent failures are explained and can be retried by the agent.

Exactly once: an item is marked "sending" (with a lease) before submission and "sent" right after
the server's 250. An item found in "sending" after a crash is checked against the mailbox's sent
folder over IMAP (Exchange files SMTP-submitted mail there): found means sent; not found means it
is queued again.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Callable

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from . import accounts, registration, tickets
from .crypto import DecryptionError
from .identity.microsoft import IdentityError
from .mail.compose import OutgoingFile, build_message, parse_addresses, quote, reply_subject, with_tag
from .mail.smtp import SendFailure, SmtpSubmitter
from .models import Account, Article, Attachment, OutboxItem, Ticket, User, utcnow

log = logging.getLogger(__name__)
MAX_TRANSIENT_ATTEMPTS = 12  # about a day with the backoff below


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(3600, 15 * 2 ** max(0, attempts - 1)))


def _store_outgoing(session: Session, ticket: Ticket, account: Account, author: User, message, to: list[str],
                    cc: list[str], body_text: str, files: list[OutgoingFile]) -> Article:
    raw = message.as_bytes()
    now = utcnow()
    article = Article(ticket_id=ticket.id, account_id=account.id, direction="out", message_id=message["Message-ID"],
                      in_reply_to=message.get("In-Reply-To", ""), references=message.get("References", ""),
                      from_addr=account.address, from_name=account.display_name or "", to_addrs=", ".join(to),
                      cc_addrs=", ".join(cc), subject=str(message["Subject"]), date=now, body_text=body_text,
                      raw_sha256=tickets.store_blob(session, raw), size=len(raw), author_id=author.id,
                      created_at=now)
    for f in files:
        article.attachments.append(Attachment(blob_sha256=tickets.store_blob(session, f.data), filename=f.filename,
                                              content_type=f.content_type, size=len(f.data)))
    session.add(article)
    session.flush()
    session.add(OutboxItem(article_id=article.id, account_id=account.id, mail_from=account.address,
                           rcpt_to=", ".join(to + cc), raw=raw, state="queued", next_attempt_at=now))
    ticket.article_count = (ticket.article_count or 0) + 1
    ticket.updated_at = now
    if ticket.status == "open":
        ticket.status = "pending"  # waiting for the customer
    session.flush()
    return article


def queue_reply(session: Session, ticket: Ticket, author: User, body_text: str, cc: list[str] | str = (),
                files: list[OutgoingFile] | None = None, to: list[str] | str | None = None) -> Article:
    """Store an answer on the ticket and queue it; the caller commits (same transaction)."""
    account = ticket.account
    last_in = next((a for a in reversed(ticket.articles) if a.direction == "in"), None)
    anchor = ticket.articles[-1] if ticket.articles else None
    recipients = parse_addresses(to, "To") if to else [ticket.customer_address]
    cc_list = [c for c in parse_addresses(list(cc) if not isinstance(cc, str) else cc, "Cc") if c not in recipients]
    if not (body_text or "").strip():
        raise ValueError("Write a reply first.")
    references = (anchor.references.split() if anchor and anchor.references else []) + \
        ([anchor.message_id] if anchor else [])
    message = build_message(from_address=account.address, from_name=account.display_name or "", to=recipients,
                            cc=cc_list, subject=reply_subject((last_in or anchor).subject if anchor else ticket.subject,
                                                              tickets.ticket_tag(ticket.number)),
                            body_text=body_text, in_reply_to=anchor.message_id if anchor else None,
                            references=references, files=files)
    return _store_outgoing(session, ticket, account, author, message, recipients, cc_list, body_text, files or [])


def open_outgoing_ticket(session: Session, account: Account, author: User, to: str, subject: str, body_text: str,
                         cc: list[str] | str = (), files: list[OutgoingFile] | None = None) -> Ticket:
    """A new ticket that starts with our mail to a customer."""
    recipients = parse_addresses(to, "To")
    if not recipients:
        raise ValueError("Add a recipient.")
    if not (body_text or "").strip():
        raise ValueError("Write a message first.")
    ticket = Ticket(number=tickets.next_ticket_number(session), account_id=account.id,
                    subject=(subject or "").strip() or "(no subject)", customer_address=recipients[0],
                    status="pending", article_count=0)
    session.add(ticket)
    session.flush()
    cc_list = [c for c in parse_addresses(list(cc) if not isinstance(cc, str) else cc, "Cc") if c not in recipients]
    message = build_message(from_address=account.address, from_name=account.display_name or "", to=recipients,
                            cc=cc_list, subject=with_tag(ticket.subject, tickets.ticket_tag(ticket.number)),
                            body_text=body_text, files=files)
    _store_outgoing(session, ticket, account, author, message, recipients, cc_list, body_text, files or [])
    return ticket


def retry(session: Session, item: OutboxItem) -> None:
    """The agent's "Retry": queue a failed item again now."""
    if item.state == "failed":
        item.state = "queued"
        item.next_attempt_at = utcnow()
        item.last_error = None


def reply_quote(ticket: Ticket) -> str:
    last = ticket.articles[-1] if ticket.articles else None
    if last is None:
        return ""
    when = (last.date or last.created_at).strftime("%Y-%m-%d %H:%M UTC")
    return quote(last.body_text or "", last.from_name or last.from_addr, when)


class Sender:
    """Sends due outbox items, one SMTP connection per mailbox per burst."""

    def __init__(self, rt, worker_id: str) -> None:
        self.rt = rt
        self.worker_id = worker_id

    def _claim(self, session: Session, item_id: int) -> bool:
        now = utcnow()
        result = session.execute(
            update(OutboxItem).where(OutboxItem.id == item_id, OutboxItem.state == "queued",
                                     OutboxItem.next_attempt_at <= now,
                                     or_(OutboxItem.lease_owner.is_(None), OutboxItem.lease_expires_at < now))
            .values(state="sending", lease_owner=self.worker_id,
                    lease_expires_at=now + timedelta(seconds=self.rt.settings.worker.sending_lease_seconds)))
        session.commit()
        return result.rowcount == 1

    def _recover_stale(self, session: Session) -> None:
        """Items left in "sending" by a crash: sent if the server filed them, else queued again."""
        stale = session.scalars(select(OutboxItem).where(OutboxItem.state == "sending",
                                                         OutboxItem.lease_expires_at < utcnow())).all()
        session.commit()  # what follows talks to the IMAP server
        for item in stale:
            found = self._in_sent_folder(session, item)
            if found is None:
                continue  # cannot tell now; look again next time
            if found:
                item.state, item.sent_at, item.server_reply = "sent", utcnow(), "found in the sent folder after a restart"
            else:
                item.state, item.next_attempt_at = "queued", utcnow()
            item.lease_owner = item.lease_expires_at = None
            session.commit()

    def _in_sent_folder(self, session: Session, item: OutboxItem) -> bool | None:
        from .mail.imap import ImapError, ImapMailbox

        account = session.get(Account, item.account_id)
        try:
            identity = self.rt.identity(session)
        except DecryptionError:
            return None
        if account is None or identity is None:
            return None
        message_id = session.scalar(select(Article.message_id).where(Article.id == item.article_id))
        session.commit()  # no transaction across the network calls below
        ms = self.rt.settings.microsoft
        try:
            token = accounts.mail_access_token(session, self.rt.vault, identity, account)
            mailbox = ImapMailbox(ms.imap_host, ms.imap_port, self.rt.settings.ca_bundle)
        except (IdentityError, ImapError):
            return None
        try:
            mailbox.login(account.address, token)
            for folder in sent_folders(mailbox):
                mailbox.client.select_folder(folder, readonly=True)
                if mailbox.client.search(["HEADER", "Message-ID", message_id]):
                    return True
            return False
        except Exception:  # noqa: BLE001 - unknown; try again later
            return None
        finally:
            mailbox.close()

    def send_due(self, should_stop: Callable[[], bool]) -> bool:
        """Send everything due; returns False if anything failed for good in this round."""
        ok = True
        with self.rt.db.sessionmaker() as session:
            self._recover_stale(session)
            due = session.execute(select(OutboxItem.id, OutboxItem.account_id)
                                  .where(OutboxItem.state == "queued", OutboxItem.next_attempt_at <= utcnow())
                                  .order_by(OutboxItem.account_id, OutboxItem.id)).all()
            by_account: dict[int, list[int]] = {}
            for item_id, account_id in due:
                by_account.setdefault(account_id, []).append(item_id)
            session.commit()
            for account_id, item_ids in by_account.items():
                if should_stop():
                    break
                ok = self._send_for_account(session, account_id, item_ids, should_stop) and ok
        return ok

    def _send_for_account(self, session: Session, account_id: int, item_ids: list[int],
                          should_stop: Callable[[], bool]) -> bool:
        account = session.get(Account, account_id)
        submitter: SmtpSubmitter | None = None
        ok = True
        try:
            for item_id in item_ids:
                if should_stop() or not self._claim(session, item_id):
                    continue
                item = session.get(OutboxItem, item_id)
                session.refresh(item)
                session.commit()  # SMTP below: hold no transaction while talking to the server
                try:
                    if submitter is None:
                        submitter = self._connect(session, account)
                    reply = submitter.send(item.mail_from, [r.strip() for r in item.rcpt_to.split(",") if r.strip()],
                                           item.raw)
                except SendFailure as failure:
                    ok = self._failed(session, item, failure) and ok
                    if failure.auth or submitter is None or submitter.client is None:
                        if submitter is not None:
                            submitter.dispose()
                        submitter = None
                    continue
                item.state, item.sent_at, item.server_reply = "sent", utcnow(), (reply or "250 OK")[:1000]
                item.attempts += 1
                item.last_error = None
                item.lease_owner = item.lease_expires_at = None
                session.commit()
                log.info("sent outbox item %s from %s", item.id, account.address)
        finally:
            if submitter is not None:
                submitter.dispose()
        return ok

    def _connect(self, session: Session, account: Account) -> SmtpSubmitter:
        try:
            identity = self.rt.identity(session)
        except DecryptionError as exc:
            raise SendFailure(str(exc), True) from None
        session.commit()
        if identity is None:
            raise SendFailure(registration.NOT_REGISTERED, False)
        if account.status in ("disabled", "needs_reconnect") or account.token_cache_enc is None:
            raise SendFailure(f"{account.address} is not connected ({account.status.replace('_', ' ')}): reconnect "
                              "the mailbox, then Retry.", True, auth=True)
        try:
            token = accounts.mail_access_token(session, self.rt.vault, identity, account)
        except IdentityError as exc:
            raise SendFailure(exc.explained.message, exc.needs_reconnect, auth=True) from None
        ms = self.rt.settings.microsoft
        submitter = SmtpSubmitter(ms.smtp_host, ms.smtp_port, self.rt.settings.ca_bundle)
        try:
            submitter.connect(account.address, token)
        except SendFailure:
            submitter.dispose()
            raise
        return submitter

    def _failed(self, session: Session, item: OutboxItem, failure: SendFailure) -> bool:
        item.attempts += 1
        item.last_error = failure.message
        item.server_reply = failure.reply or None
        item.lease_owner = item.lease_expires_at = None
        if failure.permanent or item.attempts >= MAX_TRANSIENT_ATTEMPTS:
            item.state = "failed"
            log.warning("outbox item %s failed: %s", item.id, failure.message)
        else:
            item.state = "queued"
            item.next_attempt_at = utcnow() + backoff(item.attempts)
            log.info("outbox item %s will be retried: %s", item.id, failure.message)
        session.commit()
        return not failure.permanent


def sent_folders(mailbox) -> list[str]:
    """The server's sent folder(s): special-use \\Sent first, then the usual names."""
    names = []
    for flags, _delim, name in mailbox.client.list_folders():
        if b"\\Sent" in flags:
            names.append(name)
    for candidate in ("Sent Items", "Sent"):
        if candidate not in names and mailbox.client.folder_exists(candidate):
            names.append(candidate)
    return names
