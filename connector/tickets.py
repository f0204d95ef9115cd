"""The ticket queries agents use: what a user may see, the ticket list with its filters and text search,
one ticket with its articles, and a ticket's status. Mail becomes tickets in ingest.py."""
from __future__ import annotations

import re
import weakref
from dataclasses import dataclass

from sqlalchemy import column, exists, literal_column, or_, select, table, text, union
from sqlalchemy.orm import Session, selectinload

from .models import TICKET_STATUSES, Account, Article, Ticket, User, utcnow
from .ticket_numbers import TAG_RE, ticket_tag  # noqa: F401 - ticket_tag: for the ticket pages

PAGE_SIZE = 50

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
        in_words = text(f"articles.search_vector @@ {_PG_TSQUERY}").bindparams(q_words=text_q)
        if _pg_estimated_matches(session, text_q) >= PG_COMMON_MATCHES:
            # Common words: walk the tickets newest first and test each one's articles, stopping once the
            # page is full (a few hundred tickets), instead of collecting every match from the GIN index
            # and sorting them (60,000 articles: 0.6 s at 1,000,000 articles). OFFSET 0 keeps PostgreSQL
            # from turning the EXISTS into one hashed set of all matches, which is that same slow plan.
            conditions = [in_fields, exists(select(literal_column("1")).where(Article.ticket_id == Ticket.id, in_words)
                                            .offset(literal_column("0")))]
            if number:
                conditions.append(Ticket.number == int(number.group(1)))
            return or_(*conditions)
        # One set of ticket ids, each part from its own index (GIN trigram, GIN tsvector, the unique
        # number), rather than ORed conditions on the ticket rows, which PostgreSQL would check row by row.
        parts = [select(Ticket.id).where(in_fields), select(Article.ticket_id).where(in_words)]
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


# From this many matching articles (the planner's estimate, from the search vectors' statistics) a
# PostgreSQL search walks the tickets newest first instead of collecting every match: collecting costs
# in proportion to the matches (0.6 s for 60,000 at 1,000,000 articles), walking in proportion to the
# tickets read before the page is full, which is few when the words are common (BENCHMARKS.md, 6.3).
PG_COMMON_MATCHES = 10_000


def _pg_estimated_matches(session: Session, text_q: str) -> float:
    """How many articles the planner expects the words to match (from the search vectors' statistics)."""
    plan = session.execute(text(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM articles WHERE search_vector @@ {_PG_TSQUERY}")
                           .bindparams(q_words=text_q)).scalar()
    return float(plan[0]["Plan"]["Plan Rows"])


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
