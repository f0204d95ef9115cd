"""Mail becomes tickets: dedup, threading, loop protection; and the ticket queries agents use."""
from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import exists, func, or_, select
from sqlalchemy.orm import Session, selectinload

from .mail.parse import MailHeaders, ParsedMail
from .models import TICKET_STATUSES, Account, Article, Attachment, Blob, Ticket, User, utcnow

log = logging.getLogger(__name__)
TAG_RE = re.compile(r"\[#(\d{1,12})\]")
FIRST_NUMBER = 10001
PAGE_SIZE = 50


def ticket_tag(number: int) -> str:
    return f"[#{number}]"


def synthetic_message_id(raw: bytes) -> str:
    """A stable Message-ID for mail that has none, so a re-fetch is still recognised."""
    return f"<{hashlib.sha256(raw).hexdigest()[:40]}@no-message-id.connector>"


def store_blob(session: Session, data: bytes) -> str:
    """Store bytes once by content hash; flushed at once because rows refer to it by foreign key only."""
    digest = hashlib.sha256(data).hexdigest()
    if session.get(Blob, digest) is None:
        blob = Blob(sha256=digest, size=len(data), data=data)
        session.add(blob)
        session.flush([blob])
    return digest


def next_ticket_number(session: Session) -> int:
    current = session.scalar(select(func.max(Ticket.number)))
    return (current or FIRST_NUMBER - 1) + 1


@dataclass(frozen=True)
class Ingested:
    outcome: str  # "new_ticket" | "follow_up" | "duplicate" | "ignored"
    ticket_id: int | None = None
    article_id: int | None = None


def find_ticket(session: Session, account: Account, headers: MailHeaders) -> Ticket | None:
    """The ticket a mail belongs to: by In-Reply-To/References first, then by the subject tag."""
    refs = [r for r in (headers.in_reply_to + headers.references) if r]
    if refs:
        ticket_id = session.scalar(
            select(Article.ticket_id).where(Article.account_id == account.id, Article.message_id.in_(refs))
            .order_by(Article.id.desc()).limit(1))
        if ticket_id is not None:
            return session.get(Ticket, ticket_id)
    for match in TAG_RE.finditer(headers.subject or ""):
        ticket = session.scalar(select(Ticket).where(Ticket.number == int(match.group(1)),
                                                     Ticket.account_id == account.id))
        if ticket is not None:
            return ticket
    return None


def is_own_loop(account: Account, headers: MailHeaders) -> bool:
    """Mail a mailbox sent to itself (our own reply copied back, a loop between rules)."""
    sender = headers.from_.address if headers.from_ else ""
    return sender == account.address and any(a.address == account.address for a in headers.to + headers.cc)


def ingest(session: Session, account: Account, raw: bytes, parsed: ParsedMail, uid: int | None = None) -> Ingested:
    """Attach one incoming mail to its ticket or open a new one; idempotent per Message-ID."""
    headers = parsed.headers
    message_id = headers.message_id or synthetic_message_id(raw)
    existing = session.scalar(select(Article.id).where(Article.account_id == account.id,
                                                       Article.message_id == message_id))
    if existing is not None:
        return Ingested("duplicate", article_id=existing)
    if is_own_loop(account, headers):
        return Ingested("ignored")
    automatic = headers.auto_submitted or headers.is_bounce
    now = utcnow()
    ticket = find_ticket(session, account, headers)
    outcome = "follow_up"
    if ticket is None:
        outcome = "new_ticket"
        customer = headers.reply_to[0] if headers.reply_to else headers.from_
        ticket = Ticket(number=next_ticket_number(session), account_id=account.id,
                        subject=TAG_RE.sub("", headers.subject).strip() or "(no subject)",
                        customer_address=customer.address if customer else "",
                        customer_name=customer.name if customer else "", created_at=now, status="open",
                        article_count=0)
        session.add(ticket)
        session.flush()
    elif ticket.status != "open" and not automatic:
        ticket.status = "open"  # a customer's answer reopens; auto-replies never do
    article = Article(
        ticket_id=ticket.id, account_id=account.id, direction="in", message_id=message_id,
        in_reply_to=" ".join(headers.in_reply_to), references=" ".join(headers.references),
        from_addr=headers.from_.address if headers.from_ else "", from_name=headers.from_.name if headers.from_ else "",
        to_addrs=", ".join(a.address for a in headers.to), cc_addrs=", ".join(a.address for a in headers.cc),
        subject=headers.subject, date=_naive_utc(headers.date), body_text=parsed.body_text,
        body_html=parsed.body_html, raw_sha256=store_blob(session, raw), size=len(raw), is_auto=headers.auto_submitted,
        is_bounce=headers.is_bounce, notes="\n".join(parsed.notes), imap_uid=uid, created_at=now)
    for part in parsed.attachments:
        article.attachments.append(Attachment(blob_sha256=store_blob(session, part.data), filename=part.filename,
                                              content_type=part.content_type, size=len(part.data),
                                              content_id=part.content_id, inline=part.inline))
    session.add(article)
    ticket.article_count = (ticket.article_count or 0) + 1
    ticket.updated_at = now
    session.flush()
    return Ingested(outcome, ticket.id, article.id)


def _naive_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


# -- queries for agents --------------------------------------------------------------------------

def visible_tickets(user: User):
    from .accounts import visible_accounts_query

    query = select(Ticket)
    if not user.is_admin:
        visible = visible_accounts_query(user).with_only_columns(Account.id).order_by(None)
        query = query.where(Ticket.account_id.in_(visible))
    return query


@dataclass(frozen=True)
class TicketPage:
    items: list[Ticket]
    page: int
    next_page: int | None


def search_tickets(session: Session, user: User, *, status: str | None = None, account: str | None = None,
                   q: str | None = None, page: int = 1, per_page: int = PAGE_SIZE) -> TicketPage:
    """Newest activity first. No status means every status; `account` is the mailbox address."""
    query = visible_tickets(user).options(selectinload(Ticket.account))
    if status:
        if status not in TICKET_STATUSES:
            raise ValueError(f"status must be one of {', '.join(TICKET_STATUSES)}")
        query = query.where(Ticket.status == status)
    if account:
        query = query.join(Account, Account.id == Ticket.account_id).where(Account.address == account.strip().lower())
    if q and q.strip():
        needle = f"%{_escape_like(q.strip())}%"
        in_text = exists().where(Article.ticket_id == Ticket.id,
                                 or_(Article.body_text.ilike(needle, escape="\\"),
                                     Article.subject.ilike(needle, escape="\\")))
        number = TAG_RE.search(q) or re.fullmatch(r"#?(\d+)", q.strip())
        conditions = [Ticket.subject.ilike(needle, escape="\\"), Ticket.customer_address.ilike(needle, escape="\\"),
                      Ticket.customer_name.ilike(needle, escape="\\"), in_text]
        if number:
            conditions.append(Ticket.number == int(number.group(1)))
        query = query.where(or_(*conditions))
    page = max(1, page)
    rows = list(session.scalars(query.order_by(Ticket.updated_at.desc(), Ticket.id.desc())
                                .offset((page - 1) * per_page).limit(per_page + 1)))
    return TicketPage(rows[:per_page], page, page + 1 if len(rows) > per_page else None)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def get_ticket(session: Session, user: User, ticket_id: int) -> Ticket | None:
    return session.scalar(visible_tickets(user).where(Ticket.id == ticket_id)
                          .options(selectinload(Ticket.articles).selectinload(Article.attachments),
                                   selectinload(Ticket.articles).selectinload(Article.outbox),
                                   selectinload(Ticket.account)))


def set_status(ticket: Ticket, status: str) -> None:
    if status not in TICKET_STATUSES:
        raise ValueError(f"status must be one of {', '.join(TICKET_STATUSES)}")
    ticket.status = status
    ticket.updated_at = utcnow()
