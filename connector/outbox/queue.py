"""Queue: a reply is stored with its article and its outbox item in the caller's transaction, before any
network call; the worker sends it later (sender.py)."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from ..bulk_insert import store_blob
from ..mail.compose import OutgoingFile, build_message, parse_addresses, quote, reply_subject, with_tag
from ..models import Account, Article, Attachment, OutboxItem, Ticket, User, utcnow
from ..ticket_numbers import next_ticket_number, ticket_tag


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
                      raw_sha256=store_blob(session, raw), size=len(raw), author_id=author.id,
                      created_at=now)
    for f in files:
        article.attachments.append(Attachment(blob_sha256=store_blob(session, f.data), filename=f.filename,
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
                                                              ticket_tag(ticket.number)),
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
    ticket = Ticket(number=next_ticket_number(session), account_id=account.id,
                    subject=(subject or "").strip() or "(no subject)", customer_address=recipients[0],
                    status="pending", article_count=0)
    session.add(ticket)
    session.flush()
    cc_list = [c for c in parse_addresses(list(cc) if not isinstance(cc, str) else cc, "Cc") if c not in recipients]
    message = build_message(from_address=account.address, from_name=account.display_name or "", to=recipients,
                            cc=cc_list, subject=with_tag(ticket.subject, ticket_tag(ticket.number)),
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


