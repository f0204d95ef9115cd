"""Mail becomes tickets: dedup, threading, loop protection; and the ticket queries agents use."""
from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import (bindparam, column, exists, func, insert, literal_column, or_, select, table, text, union,
                        update)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, selectinload

from .blobs import Packed
from .mail.parse import MailHeaders, ParsedMail, Part
from .models import TICKET_STATUSES, Account, Article, Attachment, Blob, Ticket, User, utcnow

log = logging.getLogger(__name__)
TAG_RE = re.compile(r"\[#(\d{1,12})\]")
FIRST_NUMBER = 10001
PAGE_SIZE = 50
SQLITE_MAX_VARIABLES = 32766 if sqlite3.sqlite_version_info >= (3, 32) else 999  # bound parameters a statement


def ticket_tag(number: int) -> str:
    return f"[#{number}]"


def synthetic_message_id(raw: bytes) -> str:
    """A stable Message-ID for mail that has none, so a re-fetch is still recognised."""
    return f"<{hashlib.sha256(raw).hexdigest()[:40]}@no-message-id.connector>"


def store_blob(session: Session, data: bytes) -> str:
    """Store bytes once by content hash; written at once because rows refer to it by foreign key only."""
    digest = hashlib.sha256(data).hexdigest()
    session.flush()
    store_blobs(session.connection(), {digest: data})
    return digest


def store_blobs(conn, blobs: dict[str, bytes], packed: dict[str, Packed] | None = None) -> None:
    """Store many blobs (by sha256) with one lookup and one multi-row INSERT of those not stored yet.

    `packed`: blobs whose bytes are already written to a pack file (blobs.py), by sha256. On PostgreSQL
    another transaction may be storing the same bytes at the same time (the same attachment arriving in
    two mailboxes): ON CONFLICT DO NOTHING lets the second one wait for the first and keep its row.
    """
    packed = packed or {}
    if packed and conn.dialect.name != "sqlite":
        raise ValueError("pack files are for the embedded SQLite database only: with a database server the "
                         "bytes go in the table, where every worker machine can read them")
    if blobs or packed:
        stored = {row[0] for row in _lookup(conn, select(Blob.sha256), Blob.sha256, set(blobs) | set(packed))}
        missing = [dict(sha256=d, size=len(b), data=b, pack=None, pack_offset=None)
                   for d, b in blobs.items() if d not in stored]
        missing += [dict(sha256=d, size=p.size, data=b"", pack=p.pack, pack_offset=p.offset)
                    for d, p in packed.items() if d not in stored and d not in blobs]
        if missing and conn.dialect.name == "postgresql":
            conn.execute(postgresql.insert(Blob).on_conflict_do_nothing(index_elements=[Blob.sha256]), missing)
        else:
            insert_rows(conn, Blob, missing)


def attachment_values(parts: list[Part], blobs: dict[str, bytes]) -> list[dict]:
    """Attachment rows (all but `article_id`) for these parts; their bytes are added to `blobs`."""
    rows = []
    for part in parts:
        digest = hashlib.sha256(part.data).hexdigest()
        blobs.setdefault(digest, part.data)
        rows.append(dict(blob_sha256=digest, filename=part.filename, content_type=part.content_type,
                         size=len(part.data), content_id=part.content_id, inline=part.inline))
    return rows


def next_ticket_number(session: Session) -> int:
    """A number for one new ticket (see `_take_ticket_numbers`)."""
    return _take_ticket_numbers(session.connection(), 1, _peek_ticket_number(session.connection()))[0]


def _peek_ticket_number(conn) -> int:
    """The number the next new ticket will most likely get, without taking it.

    SQLite: max(number) + 1, and certain (every transaction holds the write lock from its BEGIN
    IMMEDIATE, see db.py). PostgreSQL: the next value of the `ticket_numbers` sequence (revision
    0006), certain unless another transaction takes numbers meanwhile.
    """
    if conn.dialect.name == "postgresql":
        return conn.execute(text("SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END "
                                 "FROM ticket_numbers")).scalar()
    return (conn.execute(select(func.max(Ticket.number))).scalar() or FIRST_NUMBER - 1) + 1


def _take_ticket_numbers(conn, count: int, first: int) -> list[int]:
    """`count` numbers for new tickets, ascending: SQLite from `first` on (its `_peek_ticket_number`);
    PostgreSQL from the sequence, which never hands a number out twice and never waits for another
    transaction (the numbers are consecutive unless another one took numbers meanwhile)."""
    if conn.dialect.name == "postgresql":
        return list(conn.execute(text("SELECT nextval('ticket_numbers') FROM generate_series(1, :count)"),
                                 {"count": count}).scalars())
    return list(range(first, first + count))


@dataclass(frozen=True)
class Ingested:
    outcome: str  # "new_ticket" | "follow_up" | "duplicate" | "ignored"
    ticket_id: int | None = None
    article_id: int | None = None


def is_own_loop(account: Account, headers: MailHeaders) -> bool:
    """Mail a mailbox sent to itself (our own reply copied back, a loop between rules)."""
    sender = headers.from_.address if headers.from_ else ""
    return sender == account.address and any(a.address == account.address for a in headers.to + headers.cc)


def ingest(session: Session, account: Account, raw: bytes, parsed: ParsedMail | MailHeaders,
           uid: int | None = None, raw_packed: Packed | None = None) -> Ingested:
    """Attach one incoming mail to its ticket or open a new one; idempotent per Message-ID.

    `raw_packed`: where the raw mail is, if it is already written to a pack file (blobs.py).
    """
    return ingest_batch(session, account, [(raw, parsed, uid)], [raw_packed] if raw_packed else None)[0]


@dataclass(eq=False)
class _NewTicket:
    values: dict
    id: int | None = None


def ingest_batch(session: Session, account: Account,
                 items: list[tuple[bytes, ParsedMail | MailHeaders, int | None]],
                 raw_packed: list[Packed] | None = None) -> list[Ingested]:
    """Attach mails to their tickets or open new ones, idempotent per Message-ID: the same outcomes as
    taking them one by one in order, with a handful of statements.

    A mail given as `MailHeaders` only (a big import) becomes an article whose body and attachments
    are extracted later from the stored raw mail (`body_pending`, see extract.py). `raw_packed`, one
    entry per item, says where each raw mail is if it is already written to a pack file (blobs.py).

    Lookups (duplicates, threading by In-Reply-To/References and by subject tag, ticket statuses, the
    next ticket number) are one query each for the whole batch, and mails of the batch thread onto
    each other in memory; tickets, blobs, articles and attachments are then written with one
    multi-row INSERT each, and the tickets touched with one UPDATE. The caller runs this inside a
    SAVEPOINT and, if it raises, takes the mails one by one (`ingest`) to find the one that fails.
    """
    now = utcnow()
    session.flush()
    conn = session.connection()
    mails = [(raw, parsed if isinstance(parsed, MailHeaders) else parsed.headers,
              None if isinstance(parsed, MailHeaders) else parsed, uid) for raw, parsed, uid in items]
    message_ids = [_text(headers.message_id or synthetic_message_id(raw)) for raw, headers, _, _ in mails]
    existing = dict(_lookup(conn, select(Article.message_id, Article.id), Article.message_id, set(message_ids),
                            Article.account_id == account.id))
    wanted = {_text(r) for _, headers, _, _ in mails for r in headers.in_reply_to + headers.references if r}
    by_ref: dict[str, tuple[int, int]] = {}  # message_id -> (article id, ticket id) of its newest article
    for mid, art_id, ticket_id in _lookup(conn, select(Article.message_id, Article.id, Article.ticket_id),
                                          Article.message_id, wanted, Article.account_id == account.id):
        if mid not in by_ref or art_id > by_ref[mid][0]:
            by_ref[mid] = (art_id, ticket_id)
    numbers = {int(m.group(1)) for _, headers, _, _ in mails for m in TAG_RE.finditer(headers.subject or "")
               if len(m.group(1)) <= 9}  # ticket numbers are INTEGER: a longer tag names none (PostgreSQL would fail)
    by_number = {number: tid for number, tid in _lookup(conn, select(Ticket.number, Ticket.id), Ticket.number,
                                                         numbers, Ticket.account_id == account.id)}
    statuses = dict(_lookup(conn, select(Ticket.id, Ticket.status), Ticket.id,
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
        refs = [_text(r) for r in headers.in_reply_to + headers.references if r]
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
                first_number = next_number = _peek_ticket_number(conn)
            customer = headers.reply_to[0] if headers.reply_to else headers.from_
            ticket = _NewTicket(dict(
                number=next_number, account_id=account.id,
                subject=TAG_RE.sub("", headers.subject).strip() or "(no subject)",
                customer_address=customer.address if customer else "", customer_name=customer.name if customer else "",
                created_at=now, updated_at=now, status="open", article_count=0))
            ticket.values.update(_texts(ticket.values))
            new_by_number[next_number] = ticket
            next_number += 1
        elif not isinstance(ticket, _NewTicket) and statuses.get(ticket) != "open" and not automatic:
            statuses[ticket] = "open"  # a customer's answer reopens; auto-replies never do
        if raw_packed is not None:
            raw_sha = raw_packed[index].sha256
            packed_blobs[raw_sha] = raw_packed[index]
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
            subject=headers.subject, date=_naive_utc(headers.date), body_text=parsed.body_text if parsed else "",
            body_html=parsed.body_html if parsed else None, body_pending=parsed is None, raw_sha256=raw_sha,
            display=parsed.display if parsed else None,
            size=len(raw), is_auto=headers.auto_submitted, is_bounce=headers.is_bounce,
            notes="\n".join(parsed.notes) if parsed else "", imap_uid=uid, created_at=now)
        values.update(_texts(values))
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
    numbers = _take_ticket_numbers(conn, len(new_tickets), first_number) if new_tickets else []
    for new, number in zip(new_tickets, numbers):  # inserted with their final counts and numbers
        new.values["article_count"] = added[new]
        new.values["number"] = number
    for new, ticket_id in zip(new_tickets, _insert_all(conn, Ticket, [t.values for t in new_tickets])):
        new.id = ticket_id
    for _, ticket, values, _ in pending:
        values["ticket_id"] = ticket.id if isinstance(ticket, _NewTicket) else ticket
    article_ids = _insert_all(conn, Article, [p[2] for p in pending])
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


def _insert_all(conn, model, rows: list[dict]) -> list[int]:
    """Insert rows; their new ids, in row order.

    SQLite: the ids are set here, consecutive after the current maximum (safe: every transaction
    holds the write lock from its BEGIN IMMEDIATE, see db.py), so the rows go in with `insert_rows`.
    INSERT ... RETURNING in row order would cost SQLite one statement per row. Elsewhere:
    INSERT ... RETURNING in row order.
    """
    if not rows:
        return []
    if conn.dialect.name == "sqlite":
        first = (conn.execute(select(func.max(model.id))).scalar() or 0) + 1
        ids = list(range(first, first + len(rows)))
        insert_rows(conn, model, [dict(row, id=new_id) for row, new_id in zip(rows, ids)])
        return ids
    return [row[0] for row in conn.execute(insert(model).returning(model.id, sort_by_parameter_order=True), rows)]


def insert_rows(conn, model, rows: list[dict]) -> None:
    """Insert rows (all with the same keys; other columns take their defaults), returning nothing.

    SQLite: one multi-row INSERT ... VALUES per chunk of rows, so that one statement step writes
    the chunk. An executemany steps once per row, and the sqlite3 module gives up the GIL around
    every step: while the sync's fetching thread runs Python, each step then waits to get the GIL
    back, which measured here at more than half of the import's time. The statement text is built
    here because SQLAlchemy's multi-row `values()` costs milliseconds of compiling per batch; the
    parameters still go through each column type's bind processor for this dialect (SQLAlchemy's own
    `DateTime` alone would let sqlite3 write another text form). Elsewhere: executemany.
    """
    if not rows:
        return
    if conn.dialect.name != "sqlite":
        conn.execute(insert(model), rows)
        return
    table = model.__table__
    given = list(rows[0])
    defaults = {}  # Python-side defaults of the columns not given, as SQLAlchemy would apply them
    for column in table.columns:
        if column.name in rows[0] or column.default is None:
            continue
        if not (column.default.is_scalar or column.default.is_callable):
            conn.execute(insert(model), rows)  # a SQL expression default: let SQLAlchemy render it
            return
        defaults[column.name] = column.default.arg(None) if column.default.is_callable else column.default.arg
    columns = [table.c[name] for name in given + list(defaults)]
    processors = [column.type.dialect_impl(conn.dialect).bind_processor(conn.dialect) for column in columns]
    quote = conn.dialect.identifier_preparer.quote
    head = f"INSERT INTO {quote(table.name)} ({', '.join(quote(c.name) for c in columns)}) VALUES "
    one = "(" + ", ".join(["?"] * len(columns)) + ")"
    fixed = list(defaults.values())
    chunk = max(1, SQLITE_MAX_VARIABLES // len(columns))
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        values = [value if process is None else process(value)
                  for row in part for process, value in zip(processors, [row[name] for name in given] + fixed)]
        conn.exec_driver_sql(head + ", ".join([one] * len(part)), tuple(values))


def _lookup(conn, query, column, values: set, *where, chunk: int = 500):
    """Rows of `query` whose `column` is in `values`, in chunks that stay below SQL variable limits."""
    values = list(values)
    rows = []
    for start in range(0, len(values), chunk):
        rows.extend(conn.execute(query.where(column.in_(values[start:start + chunk]), *where)).all())
    return rows


def _text(value: str) -> str:
    """Text as both databases store it: PostgreSQL's text cannot hold NUL, which mail can carry (a header,
    a body in a mislabelled charset); U+FFFD takes its place everywhere, so lookups (Message-IDs,
    references) match what was stored on either database. db.py does the same for any other text sent
    to PostgreSQL."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def _texts(values: dict) -> dict:
    """The string values of a row that hold NUL, made storable (see `_text`)."""
    return {key: _text(value) for key, value in values.items() if isinstance(value, str) and "\x00" in value}


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
        query = query.where(_matches(session, q.strip()))
    page = max(1, page)
    rows = list(session.scalars(query.order_by(Ticket.updated_at.desc(), Ticket.id.desc())
                                .offset((page - 1) * per_page).limit(per_page + 1)))
    return TicketPage(rows[:per_page], page, page + 1 if len(rows) > per_page else None)


def _matches(session: Session, text_q: str):
    """The search condition: any part of the ticket's subject, customer address or name; the words of its
    articles' subject and text (the query's words as a phrase, the last one as a prefix); `#number`.

    Case-insensitive everywhere; diacritics folded in the article words. Both databases answer it from
    indexes: SQLite from its FTS5 tables (revision 0002), PostgreSQL from `articles.search_vector` and
    trigram indexes on the ticket fields (revision 0006).
    """
    number = TAG_RE.search(text_q) or re.fullmatch(r"#?(\d+)", text_q)
    if number and len(number.group(1)) > 9:
        number = None  # not a ticket number (INTEGER); longer digits are only text
    needle = f"%{_escape_like(text_q)}%"
    in_fields = or_(Ticket.subject.ilike(needle, escape="\\"), Ticket.customer_address.ilike(needle, escape="\\"),
                    Ticket.customer_name.ilike(needle, escape="\\"))
    index = _search_index(session)
    if index == "postgresql":
        # One set of ticket ids, each part from its own index (GIN trigram, GIN tsvector, the unique
        # number), rather than ORed conditions on the ticket rows, which PostgreSQL would check row by row.
        parts = [select(Ticket.id).where(in_fields),
                 select(Article.ticket_id).where(text(f"articles.search_vector @@ {_PG_TSQUERY}")
                                                 .bindparams(q_words=text_q))]
        if number:
            parts.append(select(Ticket.id).where(Ticket.number == int(number.group(1))))
        return Ticket.id.in_(union(*parts))
    if index == "sqlite":
        conditions = [in_fields]
        if len(text_q) >= 3:  # the trigram index needs 3 characters; shorter needles read the tickets
            conditions = [Ticket.id.in_(select(literal_column("rowid")).select_from(table("tickets_fts"))
                                        .where(text("tickets_fts MATCH :q_tickets")
                                               .bindparams(q_tickets=_fts_phrase(text_q))))]
        words = _fts_words(text_q)
        if words:
            # Joined rather than `articles.id IN (...)`: SQLite then reads each match's ticket once.
            in_articles = text("SELECT a.ticket_id FROM articles_fts JOIN articles AS a ON a.id = articles_fts.rowid "
                               "WHERE articles_fts MATCH :q_articles").bindparams(q_articles=words) \
                .columns(column("ticket_id"))
            conditions.append(Ticket.id.in_(in_articles))
    else:  # a database without the search index: every article's text is read
        conditions = [in_fields, exists().where(Article.ticket_id == Ticket.id,
                                                or_(Article.body_text.ilike(needle, escape="\\"),
                                                    Article.subject.ilike(needle, escape="\\")))]
    if number:
        conditions.append(Ticket.number == int(number.group(1)))
    return or_(*conditions)


# The query's words, folded as the stored vectors are (`connector_search_words`), as a phrase whose last
# word is a prefix: "XK-17 fail" -> 'xk' <-> '17' <-> 'fail':*. Without words, NULL: it matches nothing.
_PG_TSQUERY = ("to_tsquery('simple', nullif(regexp_replace(btrim(connector_search_words(:q_words)), ' +', ' <-> ', 'g'), "
               "'') || ':*')")
_WORD_RE = re.compile(r"[^\W_]+")  # letters and digits, as FTS5's unicode61 and connector_search_words() see words


def _fts_phrase(query: str) -> str:
    """The query as one FTS5 string (a phrase): quotes doubled, nothing else special."""
    return '"' + query.replace('"', '""') + '"'


def _fts_words(query: str) -> str | None:
    """The query's words as an FTS5 phrase whose last word is a prefix: '"xk 17"*'; None without words."""
    words = _WORD_RE.findall(query)
    return '"' + " ".join(words) + '"*' if words else None


_search_indexes: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _search_index(session: Session) -> str | None:
    """Which search index this database has: "sqlite" (FTS5, revision 0002), "postgresql" (revision 0006),
    or None (not migrated that far); asked once per engine."""
    bind = session.get_bind()
    key = getattr(bind, "engine", bind)
    if key not in _search_indexes:
        name = bind.dialect.name
        if name == "sqlite":
            found = session.execute(text("SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                                         "AND name IN ('articles_fts', 'tickets_fts')")).scalar() == 2
        elif name == "postgresql":
            found = session.execute(text("SELECT count(*) FROM information_schema.columns WHERE table_schema = "
                                         "current_schema() AND table_name = 'articles' "
                                         "AND column_name = 'search_vector'")).scalar() == 1
        else:
            found = False
        _search_indexes[key] = name if found else None
    return _search_indexes[key]


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
