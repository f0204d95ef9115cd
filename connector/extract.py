"""Body, HTML, display and attachments of mails that a big import took from their headers only (see
sync.py), and of mails stored before the display model existed (revision 0008).

The raw mail is stored at import, so nothing waits on this but the full text search: the worker
extracts pending articles in the background soon after the import, and reading an article (ticket
page, API, reply quote) extracts it on the spot. Each article is claimed by a conditional UPDATE
(`... WHERE body_pending`), so two processes that race on it store its attachments once. Every parse
runs under the same time budget as the sync's (parse_pool.py): a mail over it keeps an empty body and a
note saying so, and the ticket page opens anyway.

An incoming mail stored before revision 0008 has no display model: reading it re-reads it from its raw
mail the same way (claimed by `display IS NULL`), replacing its text, HTML and attachments with what
today's rules find (forwarded mails' text and attachments, inline text parts). If that fails (the raw
mail is gone from the blob folder, the parse overran its budget), the article keeps what it had and is
shown as before; either way it is not tried again (`display` is then '').
"""
from __future__ import annotations

import collections
import logging
from typing import Callable, Iterable

from sqlalchemy import and_, bindparam, case, delete, or_, select, true, update
from sqlalchemy.orm import Session

from . import bulk_insert, parse_pool
from .blobs import BlobFiles
from .db import Database
from .mail.display import assemble
from .mail.parse import ParsedMail
from .models import Article, Attachment, Blob

log = logging.getLogger(__name__)
BATCH_SIZE = 200  # articles a batch: fewer commits (each flushes the full-text index) and hand-overs
_PENDING = Article.body_pending == true()  # this exact term is what lets SQLite use the partial index
# Stored before the display model (revision 0008): read again from the raw mail when it is opened.
_LEGACY = and_(Article.body_pending.is_(False), Article.display.is_(None), Article.direction == "in",
               Article.raw_sha256.is_not(None))
_EMPTY_DISPLAY = assemble([], [], 0).display
_TEXTS = "temp.extracted_texts"  # SQLite: a batch's extracted texts on their way into `articles` (_write_texts)


def needs_extraction(article: Article) -> bool:
    """Is this article's body still to be read from its raw mail (a big import, or stored before 0008)?"""
    return article.body_pending or (article.display is None and article.direction == "in"
                                    and article.raw_sha256 is not None)


def pending_ids(session: Session, account_ids: Iterable[int] | None = None, limit: int = BATCH_SIZE,
                after: int = 0) -> list[int]:
    """Articles still to extract, oldest first, with ids above `after` (the partial index answers this)."""
    query = select(Article.id).where(_PENDING, Article.id > after)
    if account_ids is not None:
        query = query.where(Article.account_id.in_(list(account_ids)))
    return list(session.scalars(query.order_by(Article.id).limit(limit)))


def _read_raw(session: Session, article_ids: list[int]) -> list[tuple[int, bytes | parse_pool.StoredMail | None]]:
    """Each article's raw mail: its bytes (kept in the database), where it is in a pack file (a parser process
    reads it there: parse_pool.StoredMail), or None if it is nowhere to be found."""
    rows = bulk_insert.binary_rows(session.connection(),  # bytea as bytes, not hex text, on PostgreSQL
                                   select(Article.id, Article.raw_sha256, Blob.pack, Blob.pack_offset, Blob.size,
                                          case((Blob.pack.is_(None), Blob.data), else_=None))
                                   .outerjoin(Blob, Blob.sha256 == Article.raw_sha256)
                                   .where(Article.id.in_(article_ids), or_(_PENDING, _LEGACY))
                                   .order_by(Article.id))
    files = BlobFiles.for_bind(session.get_bind()) if any(row[2] for row in rows) else None
    return [(article_id, data if pack is None else _stored(files, pack, offset, size, sha256))
            for article_id, sha256, pack, offset, size, data in rows]


def _stored(files: BlobFiles | None, pack: str, offset: int, size: int, sha256: str) -> parse_pool.StoredMail | None:
    try:
        return parse_pool.StoredMail(str(files.path(pack)), offset, size, sha256) if files is not None else None
    except ValueError:  # not a pack name
        return None


def _start(raw_rows: list[tuple[int, bytes | parse_pool.StoredMail | None]], max_size: int,
           budget: float = parse_pool.DEFAULT_BUDGET):
    """Begin parsing; returns a callable giving [(article id, ParsedMail, or None if there is no raw mail (or it
    is damaged in its pack), or the exception parsing raised or that stands for it, e.g. ParseTimeout)]."""
    present = [(article_id, data) for article_id, data in raw_rows if data is not None]
    collect, _ = parse_pool.start([data for _, data in present], headers_only=False, max_size=max_size, budget=budget,
                                  body_only=True)  # the headers were read at import

    def results():
        parsed = dict(zip([article_id for article_id, _ in present], collect()))
        return [(article_id, parsed.get(article_id)) for article_id, _ in raw_rows]
    return results


def _store(session: Session, results: list[tuple[int, ParsedMail | Exception | None]], legacy: bool = False) -> int:
    """Write what was extracted, for the articles still pending; returns how many this call stored.

    The articles are claimed first, all with one conditional UPDATE ... RETURNING: the rows it
    returns are this transaction's (SQLite's write lock, PostgreSQL's row locks), so a racing
    extractor claims none of them and stores no attachment twice. Their texts then go in with one
    statement run for every row. `legacy`: also claim articles stored before the display model (with a
    second UPDATE, so that each is known for what it is), whose attachments are replaced.
    """
    conn = session.connection()
    ids = [article_id for article_id, _ in results]
    claimed = set(conn.scalars(update(Article).where(Article.id.in_(ids), _PENDING)
                               .values(body_pending=False).returning(Article.id)))
    again = set(conn.scalars(update(Article).where(Article.id.in_(ids), _LEGACY).values(display="")
                             .returning(Article.id))) if legacy else set()
    blobs: dict[str, bytes] = {}
    attachment_rows: list[dict] = []
    texts: list[dict] = []
    for article_id, parsed in results:
        if article_id not in claimed and article_id not in again:
            continue  # extracted meanwhile by someone else
        if isinstance(parsed, ParsedMail):
            texts.append(dict(article=article_id, text=parsed.body_text, html=parsed.body_html,
                              note="\n".join(parsed.notes), display=parsed.display))
            attachment_rows.extend(dict(row, article_id=article_id)
                                   for row in bulk_insert.attachment_values(parsed.attachments, blobs))
            continue
        if parsed is None:
            note = "the raw mail is missing or damaged in the blob folder: restore the folder from a backup"
        elif isinstance(parsed, parse_pool.ParseTimeout):
            note = (f"reading this mail took longer than the {parsed.budget:g} s budget, so its body and "
                    "attachments were not extracted: download the original (raw) to read it")
        else:
            note = f"the body could not be extracted ({parsed}): download the original"
        log.warning("article %s: %s", article_id, note)
        if article_id in claimed:  # one stored before the display model keeps what it had (its display is '')
            texts.append(dict(article=article_id, text="", html=None, note=note, display=_EMPTY_DISPLAY))
    replaced = [dict(article=t["article"]) for t in texts if t["article"] in again]
    if replaced:
        conn.execute(delete(Attachment).where(Attachment.article_id == bindparam("article")), replaced)
    _write_texts(conn, texts)
    bulk_insert.store_blobs(conn, blobs)
    bulk_insert.insert_rows(conn, Attachment, attachment_rows)
    return len(claimed) + len(again)


def _write_texts(conn, texts: list[dict]) -> None:
    """Set the articles' text, HTML, notes and display. SQLite: the rows go into a temporary table (multi-row
    INSERTs) and one UPDATE ... FROM sets them all, so the whole batch, its full-text index triggers included,
    runs in one statement step. An executemany steps once per row and gives up the GIL around each step: with
    any other thread running Python meanwhile, every row then waits to get it back. Measured on the benchmark's
    10,000 articles in batches of 200 (BENCHMARKS.md, section 1): 1.8 s of CPU as an executemany, 0.9 s as one
    UPDATE; with a thread spinning in Python beside it, 24.6 s and 2.8 s of wall time. Elsewhere: executemany."""
    if not texts:
        return
    if conn.dialect.name != "sqlite":
        conn.execute(update(Article).where(Article.id == bindparam("article"))
                     .values(body_text=bindparam("text"), body_html=bindparam("html"), notes=bindparam("note"),
                             display=bindparam("display")),
                     texts)
        return
    conn.exec_driver_sql(f"CREATE TEMP TABLE IF NOT EXISTS {_TEXTS} (id INTEGER PRIMARY KEY, body_text TEXT, "
                         "body_html TEXT, notes TEXT, display TEXT)")
    rows = [(t["article"], t["text"], t["html"], t["note"], t["display"]) for t in texts]
    per = bulk_insert.SQLITE_MAX_VARIABLES // 5
    for start in range(0, len(rows), per):
        part = rows[start:start + per]
        conn.exec_driver_sql(f"INSERT INTO {_TEXTS} VALUES " + ", ".join(["(?, ?, ?, ?, ?)"] * len(part)),
                             tuple(value for row in part for value in row))
    conn.exec_driver_sql(f"UPDATE articles SET body_text = t.body_text, body_html = t.body_html, notes = t.notes, "
                         f"display = t.display FROM {_TEXTS} AS t WHERE articles.id = t.id")
    conn.exec_driver_sql(f"DELETE FROM {_TEXTS}")


def extract(session: Session, article_ids: list[int], *, max_size: int,
            budget: float = parse_pool.DEFAULT_BUDGET, legacy: bool = False) -> int:
    """Extract these articles if they are still pending; returns how many were stored. The read is committed
    before parsing (no transaction, so no SQLite write lock, is held while a mail is parsed); the caller
    commits what is stored."""
    if not article_ids:
        return 0
    parsing_now = _start(_read_raw(session, article_ids), max_size, budget)
    session.commit()
    return _store(session, parsing_now(), legacy)


def ensure_extracted(session: Session, articles: list[Article], *, max_size: int,
                     budget: float = parse_pool.DEFAULT_BUDGET) -> None:
    """Before showing articles: extract the pending ones now and commit, so the reader never sees an empty body.
    Each mail's parse is bounded by `budget`; one over it is shown with a note instead of its body."""
    waiting = [a for a in articles if needs_extraction(a)]
    if not waiting:
        return
    extract(session, [a.id for a in waiting], max_size=max_size, budget=budget,
            legacy=any(not a.body_pending for a in waiting))
    session.commit()
    for article in waiting:
        session.expire(article)  # reload text, HTML, notes and attachments as stored


def extract_pending(db: Database, *, max_size: int, account_ids: Iterable[int] | None = None,
                    should_stop: Callable[[], bool] = lambda: False, batch_size: int = BATCH_SIZE,
                    budget: float = parse_pool.DEFAULT_BUDGET) -> int:
    """Extract every pending article (of these accounts), one committed batch at a time; returns how many.

    The next batch is parsed (on every core) while the current one is written, and no transaction
    is held while parsing.
    """
    account_ids = list(account_ids) if account_ids is not None else None
    done = 0
    after = 0  # ids are taken in order: a batch being parsed is not read again
    in_pool: collections.deque = collections.deque()
    with db.bulk_session() as session:
        while not should_stop():
            ids = pending_ids(session, account_ids, batch_size, after=after)
            if ids:
                after = ids[-1]
                in_pool.append(_start(_read_raw(session, ids), max_size, budget))
                session.commit()  # end the read: no transaction while parsing
                if len(in_pool) < parse_pool.POOL_DEPTH:
                    continue  # keep the next batch parsing while this one is written
            if not in_pool:
                break
            done += _store(session, in_pool.popleft()())
            session.commit()
            parse_pool.release_memory()
    return done
