"""Body extraction after a headers-only import (connector/extract.py), against the real SQLite database."""
from __future__ import annotations

import threading
import time
from email.message import EmailMessage

from sqlalchemy import func, select

from connector import extract, parse_pool
from connector.mail.parse import parse_headers, parse_message
from connector.models import Account, Article, Attachment
from connector.ingest import FetchedMail, ingest
from tests.support.mail import make_mail

MAX = 36 * 1024 * 1024


def _with_attachment(n: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = "customer@example.net"
    msg["To"] = "support@example.com"
    msg["Subject"] = f"Report {n}"
    msg["Message-ID"] = f"<report-{n}@example.net>"
    msg.set_content(f"See report {n}.")
    msg.add_attachment(f"report {n}".encode(), maintype="text", subtype="csv", filename=f"report-{n}.csv")
    return msg.as_bytes()


def _import_headers_only(rt, raws: list[bytes], address: str = "support@example.com") -> int:
    with rt.db.session() as session:
        account = Account(address=address)
        session.add(account)
        session.flush()
        ingest(session, account, [FetchedMail(raw, parse_headers(raw), i + 1) for i, raw in enumerate(raws)])
        return account.id


def test_extraction_stores_exactly_what_a_full_parse_gives(rt):
    raws = [_with_attachment(n) for n in range(3)] + [make_mail(to="support@example.com", html="<p>rich</p>")]
    account_id = _import_headers_only(rt, raws)
    with rt.db.session() as session:
        assert extract.pending_ids(session) == extract.pending_ids(session, [account_id]) != []
        assert session.scalar(select(func.count()).select_from(Attachment)) == 0
    assert extract.extract_pending(rt.db, max_size=MAX) == 4
    with rt.db.session() as session:
        for article, raw in zip(session.scalars(select(Article).order_by(Article.id)), raws):
            parsed = parse_message(raw)
            assert not article.body_pending
            assert (article.body_text, article.body_html) == (parsed.body_text, parsed.body_html)
            assert [(a.filename, a.content_type, a.size) for a in article.attachments] == \
                [(p.filename, p.content_type, len(p.data)) for p in parsed.attachments]


def test_two_extractions_of_the_same_articles_store_attachments_once(rt):
    _import_headers_only(rt, [_with_attachment(n) for n in range(2)])
    with rt.db.session() as session:
        ids = extract.pending_ids(session)
        stale = extract._start(extract._read_raw(session, ids), MAX)  # read by a racing process first
    with rt.db.session() as session:
        assert extract.extract(session, ids, max_size=MAX) == 2
    with rt.db.session() as session:
        assert extract._store(session, stale()) == 0  # the loser of the race claims nothing
        assert extract.extract(session, ids, max_size=MAX) == 0
        assert session.scalar(select(func.count()).select_from(Attachment)) == 2


def test_reading_extracts_just_those_articles(rt):
    _import_headers_only(rt, [_with_attachment(n) for n in range(3)])
    with rt.db.sessionmaker() as session:
        first = session.scalars(select(Article).order_by(Article.id)).first()
        assert first.body_pending and first.attachments == []
        extract.ensure_extracted(session, [first], max_size=MAX)
        assert not first.body_pending and first.body_text == "See report 0."
        assert [a.filename for a in first.attachments] == ["report-0.csv"]
    with rt.db.session() as session:
        assert len(extract.pending_ids(session)) == 2


def test_extraction_is_per_account_and_stops_when_told(rt):
    one = _import_headers_only(rt, [_with_attachment(n) for n in range(3)], "one@example.com")
    two = _import_headers_only(rt, [_with_attachment(n) for n in range(3, 5)], "two@example.com")
    assert extract.extract_pending(rt.db, max_size=MAX, account_ids=[two]) == 2
    assert extract.extract_pending(rt.db, max_size=MAX, account_ids=[one], should_stop=lambda: True) == 0
    assert extract.extract_pending(rt.db, max_size=MAX, batch_size=1) == 3
    with rt.db.session() as session:
        assert extract.pending_ids(session) == []
        if rt.db.is_sqlite:  # the page cache of the connection is back to the default afterwards
            assert session.connection().exec_driver_sql("PRAGMA cache_size").scalar() == -65536


def test_a_mail_over_the_size_limit_keeps_a_note_instead_of_a_body(rt):
    _import_headers_only(rt, [make_mail(to="support@example.com", body="x" * 5000)])
    assert extract.extract_pending(rt.db, max_size=1000) == 1
    with rt.db.session() as session:
        article = session.scalar(select(Article))
        assert article.body_text == "" and "exceeds" in article.notes


def test_finding_pending_articles_uses_the_partial_index(rt):
    query = select(Article.id).where(extract._PENDING, Article.id > 0).order_by(Article.id).limit(50)
    with rt.db.session() as session:
        conn = session.connection()
        sql = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        if rt.db.is_sqlite:
            assert "body_pending = 1" in sql
            plan = " ".join(row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
        else:  # PostgreSQL: the index's predicate is `WHERE body_pending`; an empty table would be read whole
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = " ".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN {sql}"))
    assert "ix_articles_body_pending" in plan


def test_a_bulk_session_keeps_one_connection_with_a_small_cache(rt):
    sqlite = rt.db.is_sqlite  # the cache is SQLite's; the one connection is for both
    with rt.db.bulk_session() as session:
        first = session.connection().connection.dbapi_connection
        assert not sqlite or session.connection().exec_driver_sql("PRAGMA cache_size").scalar() == -8192
        session.commit()
        assert session.connection().connection.dbapi_connection is first  # still the same after a commit
        assert not sqlite or session.connection().exec_driver_sql("PRAGMA cache_size").scalar() == -8192
    if sqlite:
        assert first.execute("PRAGMA cache_size").fetchone()[0] == -65536  # given back to the pool as it was


def hang_on_marker(raw: bytes, max_size: int, headers: bool = True):
    """parse_pool._parse_one for a test (module level: parser processes import it by name)."""
    if b"X-Test-Hang: yes" in raw:
        time.sleep(3600)
    return parse_message(raw, max_size=max_size, headers=headers)


def test_a_mail_over_the_budget_gets_a_note_and_no_lock_is_held_while_it_is_parsed(rt, monkeypatch):
    monkeypatch.setattr(parse_pool, "_parse_one", hang_on_marker)
    _import_headers_only(rt, [make_mail(to="support@example.com", subject="stuck", headers={"X-Test-Hang": "yes"}),
                              make_mail(to="support@example.com", subject="fine", body="Fine.")])
    with rt.db.session() as session:
        ids = extract.pending_ids(session)
    stored: list[int] = []

    def extract_in_background() -> None:
        with rt.db.session() as session:
            stored.append(extract.extract(session, ids, max_size=MAX, budget=3))

    extracting = threading.Thread(target=extract_in_background)
    extracting.start()
    time.sleep(1)  # the extraction now waits for the stuck parse
    started = time.monotonic()
    with rt.db.session() as session:  # another writer (the sync, the web app) is not held up (SQLite's one lock)
        session.add(Account(address="writer@example.com"))
    assert time.monotonic() - started < 1.5 and extracting.is_alive()
    extracting.join(60)
    assert stored == [2]
    with rt.db.session() as session:
        stuck, fine = session.scalars(select(Article).order_by(Article.id)).all()
        assert not stuck.body_pending and stuck.body_text == "" and stuck.attachments == []
        assert "took longer than the 3 s budget" in stuck.notes
        assert not fine.body_pending and fine.body_text == "Fine."
