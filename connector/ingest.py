"""Store: parsed mail becomes articles on tickets. The one import path; a single mail is a batch of one.

Rules: dedup by Message-ID per mailbox (a mail without one gets a stable synthetic id), threading by
In-Reply-To/References and then by the subject tag `[#number]`, a customer's answer reopens its
ticket (auto-replies and bounces never do), and mail a mailbox sent to itself is ignored.
The caller sets the transaction boundary (the sync commits a batch with its new high-water mark).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from .blobs import Packed
from .bulk_insert import (attachment_values, insert_all, insert_rows, lookup, naive_utc, storable, storables,
                          store_blobs)
from .mail.parse import MailHeaders, ParsedMail
from .models import Account, Article, Attachment, Ticket, utcnow
from .ticket_numbers import TAG_RE, peek_ticket_number, take_ticket_numbers


@dataclass(frozen=True)
class FetchedMail:
    """One mail as the sync hands it over: its bytes, what the parser made of them (a whole `ParsedMail`, or
    `MailHeaders` only for a big import, whose body is extracted later: extract.py), where it came from in
    the mailbox (`uid`), and where its raw bytes already are if a pack file holds them (`packed`, blobs.py)."""
    raw: bytes
    parsed: ParsedMail | MailHeaders
    uid: int | None = None
    packed: Packed | None = None

    @property
    def headers(self) -> MailHeaders:
        return self.parsed if isinstance(self.parsed, MailHeaders) else self.parsed.headers

    @property
    def whole(self) -> ParsedMail | None:
        return None if isinstance(self.parsed, MailHeaders) else self.parsed


@dataclass(frozen=True)
class Ingested:
    outcome: str  # "new_ticket" | "follow_up" | "duplicate" | "ignored"
    ticket_id: int | None = None
    article_id: int | None = None


def synthetic_message_id(raw: bytes) -> str:
    """A stable Message-ID for mail that has none, so a re-fetch is still recognised."""
    return f"<{hashlib.sha256(raw).hexdigest()[:40]}@no-message-id.connector>"


def is_own_loop(account: Account, headers: MailHeaders) -> bool:
    """Mail a mailbox sent to itself (our own reply copied back, a loop between rules)."""
    sender = headers.from_.address if headers.from_ else ""
    return sender == account.address and any(a.address == account.address for a in headers.to + headers.cc)



@dataclass(eq=False)
class _NewTicket:
    values: dict
    id: int | None = None


def ingest(session: Session, account: Account, mails: list[FetchedMail]) -> list[Ingested]:
    """Attach mails to their tickets or open new ones, idempotent per Message-ID: one outcome per mail, the
    same as taking them one at a time in order, with a handful of statements.

    A mail given as `MailHeaders` only (a big import) becomes an article whose body and attachments are
    extracted later from the stored raw mail (`body_pending`, see extract.py).

    Lookups (duplicates, threading by In-Reply-To/References and by subject tag, ticket statuses, the
    next ticket number) are one query each for the whole batch, and mails of the batch thread onto
    each other in memory; tickets, blobs, articles and attachments are then written with one
    multi-row INSERT each, and the tickets touched with one UPDATE. The sync runs this inside a
    SAVEPOINT and, if it raises, takes the mails again one by one, each in its own SAVEPOINT, to find
    the one that fails (sync/import_pass.py).
    """
    now = utcnow()
    session.flush()
    conn = session.connection()
    items = mails
    mails = [(m.raw, m.headers, m.whole, m.uid) for m in items]
    message_ids = [storable(headers.message_id or synthetic_message_id(raw)) for raw, headers, _, _ in mails]
    existing = dict(lookup(conn, select(Article.message_id, Article.id), Article.message_id, set(message_ids),
                            Article.account_id == account.id))
    wanted = {storable(r) for _, headers, _, _ in mails for r in headers.in_reply_to + headers.references if r}
    by_ref: dict[str, tuple[int, int]] = {}  # message_id -> (article id, ticket id) of its newest article
    for mid, art_id, ticket_id in lookup(conn, select(Article.message_id, Article.id, Article.ticket_id),
                                          Article.message_id, wanted, Article.account_id == account.id):
        if mid not in by_ref or art_id > by_ref[mid][0]:
            by_ref[mid] = (art_id, ticket_id)
    numbers = {int(m.group(1)) for _, headers, _, _ in mails for m in TAG_RE.finditer(headers.subject or "")
               if len(m.group(1)) <= 9}  # ticket numbers are INTEGER: a longer tag names none (PostgreSQL would fail)
    by_number = {number: tid for number, tid in lookup(conn, select(Ticket.number, Ticket.id), Ticket.number,
                                                         numbers, Ticket.account_id == account.id)}
    statuses = dict(lookup(conn, select(Ticket.id, Ticket.status), Ticket.id,
                            {t for _, t in by_ref.values()} | set(by_number.values())))
    next_number: int | None = None
    first_number = 0
    new_by_number: dict[int, _NewTicket] = {}
    batch_refs: dict[str, tuple[int, object]] = {}  # message_id -> (position in `pending`, ticket) of this batch
    results: list[Ingested | None] = []
    pending: list[tuple[int, object, dict, list]] = []  # (index, ticket id or _NewTicket, article, attachments)
    blobs: dict[str, bytes] = {}
    packed_blobs: dict[str, Packed] = {}
    for index, ((raw, headers, parsed, uid), message_id) in enumerate(zip(mails, message_ids)):
        if message_id in existing:
            results.append(Ingested("duplicate", article_id=existing[message_id]))
            continue
        if message_id in batch_refs:
            results.append(None)  # a second copy within this batch; its article id is filled in below
            continue
        if is_own_loop(account, headers):
            results.append(Ingested("ignored"))
            continue
        automatic = headers.auto_submitted or headers.is_bounce
        refs = [storable(r) for r in headers.in_reply_to + headers.references if r]
        ticket: object = None
        in_batch = [batch_refs[r] for r in refs if r in batch_refs]
        if in_batch:  # newer than anything stored: the newest referenced article decides the ticket
            ticket = max(in_batch, key=lambda pair: pair[0])[1]
        else:
            known = [by_ref[r] for r in refs if r in by_ref]
            if known:
                ticket = max(known)[1]
        if ticket is None:
            for match in TAG_RE.finditer(headers.subject or ""):
                number = int(match.group(1))
                ticket = by_number.get(number) or new_by_number.get(number)
                if ticket is not None:
                    break
        outcome = "follow_up"
        if ticket is None:
            outcome = "new_ticket"
            if next_number is None:  # numbered as they will most likely be; the numbers are taken below
                first_number = next_number = peek_ticket_number(conn)
            customer = headers.reply_to[0] if headers.reply_to else headers.from_
            ticket = _NewTicket(dict(
                number=next_number, account_id=account.id,
                subject=TAG_RE.sub("", headers.subject).strip() or "(no subject)",
                customer_address=customer.address if customer else "", customer_name=customer.name if customer else "",
                created_at=now, updated_at=now, status="open", article_count=0))
            ticket.values.update(storables(ticket.values))
            new_by_number[next_number] = ticket
            next_number += 1
        elif not isinstance(ticket, _NewTicket) and statuses.get(ticket) != "open" and not automatic:
            statuses[ticket] = "open"  # a customer's answer reopens; auto-replies never do
        if items[index].packed is not None:
            raw_sha = items[index].packed.sha256
            packed_blobs[raw_sha] = items[index].packed
        else:
            raw_sha = hashlib.sha256(raw).hexdigest()
            blobs.setdefault(raw_sha, raw)
        attachments = attachment_values(parsed.attachments, blobs) if parsed else []
        values = dict(
            account_id=account.id, direction="in", message_id=message_id,
            in_reply_to=" ".join(headers.in_reply_to), references=" ".join(headers.references),
            from_addr=headers.from_.address if headers.from_ else "",
            from_name=headers.from_.name if headers.from_ else "",
            to_addrs=", ".join(a.address for a in headers.to), cc_addrs=", ".join(a.address for a in headers.cc),
            subject=headers.subject, date=naive_utc(headers.date), body_text=parsed.body_text if parsed else "",
            body_html=parsed.body_html if parsed else None, body_pending=parsed is None, raw_sha256=raw_sha,
            display=parsed.display if parsed else None,
            size=len(raw), is_auto=headers.auto_submitted, is_bounce=headers.is_bounce,
            notes="\n".join(parsed.notes) if parsed else "", imap_uid=uid, created_at=now)
        values.update(storables(values))
        batch_refs[message_id] = (len(pending), ticket)
        pending.append((index, ticket, values, attachments))
        results.append(Ingested(outcome))
    # -- writes ------------------------------------------------------------------------------------------
    store_blobs(conn, blobs, packed_blobs)
    added: dict[object, int] = {}  # ticket id or _NewTicket -> articles this batch adds to it
    for _, ticket, _, _ in pending:
        added[ticket] = added.get(ticket, 0) + 1
    new_tickets = list(new_by_number.values())
    # Taken now, as late as possible. On PostgreSQL another writer may have taken numbers since the peek:
    # these tickets then get later ones, and a subject tag matched above to one of them named a number
    # nobody had been told yet (mail can only quote numbers of committed tickets).
    numbers = take_ticket_numbers(conn, len(new_tickets), first_number) if new_tickets else []
    for new, number in zip(new_tickets, numbers):  # inserted with their final counts and numbers
        new.values["article_count"] = added[new]
        new.values["number"] = number
    for new, ticket_id in zip(new_tickets, insert_all(conn, Ticket, [t.values for t in new_tickets])):
        new.id = ticket_id
    for _, ticket, values, _ in pending:
        values["ticket_id"] = ticket.id if isinstance(ticket, _NewTicket) else ticket
    article_ids = insert_all(conn, Article, [p[2] for p in pending])
    insert_rows(conn, Attachment, [dict(a, article_id=article_id)
                                   for article_id, (_, _, _, attachments) in zip(article_ids, pending)
                                   for a in attachments])
    for (index, _, values, _), article_id in zip(pending, article_ids):
        results[index] = Ingested(results[index].outcome, values["ticket_id"], article_id)
    followed = {tid: n for tid, n in added.items() if not isinstance(tid, _NewTicket)}
    if followed:
        conn.execute(update(Ticket).where(Ticket.id == bindparam("tid"))
                     .values(article_count=Ticket.article_count + bindparam("n"), updated_at=now,
                             status=bindparam("new_status")),
                     [dict(tid=tid, n=n, new_status=statuses.get(tid, "open")) for tid, n in followed.items()])
    for ticket in [o for o in session.identity_map.values() if isinstance(o, Ticket) and o.id in followed]:
        session.expire(ticket)  # written behind the ORM's back (its counters, status and articles)
    article_of = {values["message_id"]: article_id for (_, _, values, _), article_id in zip(pending, article_ids)}
    return [r if r is not None else Ingested("duplicate", article_id=article_of.get(message_ids[i]))
            for i, r in enumerate(results)]

