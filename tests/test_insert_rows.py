"""`bulk_insert.insert_rows` (one multi-row INSERT per chunk on SQLite, COPY on PostgreSQL) stores exactly what
SQLAlchemy's own insert stores: the same values through the same column types, the same defaults, every chunk."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import event, insert, select, text

from connector import bulk_insert
from connector.models import Account, Article, Blob, Ticket


def _ticket(session, account_id: int) -> int:
    ticket = Ticket(number=10001, account_id=account_id, subject="Printer")
    session.add(ticket)
    session.flush()
    return ticket.id


def _rows(account_id: int, ticket_id: int, start: int, count: int) -> list[dict]:
    return [dict(account_id=account_id, ticket_id=ticket_id, direction="in", message_id=f"<m{i}@x>",
                 references="<a@x> <b@x>", subject=f"Printer {i} jams", body_text="It says 'ERR-7' again.",
                 body_html=None if i % 2 else "<p>It says</p>", is_auto=bool(i % 3 == 0), body_pending=i % 2 == 0,
                 date=datetime(2026, 11, 30, 8, 15, 0, 0 if i % 2 else 123456), size=1000 + i, imap_uid=i)
            for i in range(start, start + count)]


def _stored(session, account_id: int) -> list[tuple]:
    """Every column but the ids and the creation time, as SQLAlchemy reads it and as the database holds it
    (SQLite's quote(), PostgreSQL's text form)."""
    columns = [c for c in Article.__table__.columns if c.name not in ("id", "account_id", "ticket_id", "created_at")]
    typed = session.execute(select(*columns).where(Article.account_id == account_id).order_by(Article.message_id))
    conn = session.connection()
    if conn.dialect.name == "sqlite":
        quoted = ", ".join(f'quote("{c.name}")' for c in columns)
    else:
        quoted = ", ".join(f'"{c.name}"::text' for c in columns)
    stored = conn.execute(text(f"SELECT {quoted} FROM articles WHERE account_id = :account ORDER BY message_id"),
                          {"account": account_id})
    return list(zip(map(tuple, typed), map(tuple, stored)))


def test_the_same_rows_as_sqlalchemy_insert(rt):
    with rt.db.session() as session:
        mine, theirs = Account(address="mine@x.test"), Account(address="theirs@x.test")
        session.add_all([mine, theirs])
        session.flush()
        conn = session.connection()
        bulk_insert.insert_rows(conn, Article, _rows(mine.id, _ticket(session, mine.id), 0, 7))
        other_ticket = Ticket(number=10002, account_id=theirs.id, subject="Printer")
        session.add(other_ticket)
        session.flush()
        conn.execute(insert(Article), _rows(theirs.id, other_ticket.id, 0, 7))
        assert _stored(session, mine.id) == _stored(session, theirs.id)
        created = session.scalars(select(Article.created_at).where(Article.account_id == mine.id)).all()
        assert all(isinstance(value, datetime) for value in created)  # the Python-side default was applied
        reloaded = session.scalars(select(Article).where(Article.account_id == mine.id)
                                   .order_by(Article.message_id)).all()
        assert [a.date.microsecond for a in reloaded] == [123456, 0, 123456, 0, 123456, 0, 123456]
        assert [a.body_pending for a in reloaded] == [True, False, True, False, True, False, True]
        assert reloaded[0].notes == "" and reloaded[0].references == "<a@x> <b@x>"  # default; reserved word


def test_rows_beyond_one_statement_go_in_chunks_in_order(rt, monkeypatch, database_backend):
    # 14 columns given and 8 defaulted: 22 parameters a row, so 70 of them allow 3 rows a statement
    monkeypatch.setattr(bulk_insert, "SQLITE_MAX_VARIABLES", 70)
    statements = []
    event.listen(rt.db.engine, "before_cursor_execute",
           lambda conn, cursor, sql, params, context, many: statements.append(sql.count("(?"))
           if sql.startswith('INSERT INTO "articles"') or sql.startswith("INSERT INTO articles") else None)
    with rt.db.session() as session:
        account = Account(address="desk@x.test")
        session.add(account)
        session.flush()
        rows = _rows(account.id, _ticket(session, account.id), 0, 11)
        bulk_insert.insert_rows(session.connection(), Article, [dict(row, id=500 + i) for i, row in enumerate(rows)])
        stored = session.execute(select(Article.id, Article.message_id).order_by(Article.id)).all()
        assert stored == [(500 + i, f"<m{i}@x>") for i in range(11)]
    if database_backend == "sqlite":
        assert statements == [3, 3, 3, 2]  # rows a statement


def test_bytes_and_the_search_index(rt):
    with rt.db.session() as session:
        account = Account(address="desk@x.test")
        session.add(account)
        session.flush()
        bulk_insert.insert_rows(session.connection(), Blob, [dict(sha256="ab" * 32, size=3, data=b"\x00\xff\n")])
        bulk_insert.insert_rows(session.connection(), Article, _rows(account.id, _ticket(session, account.id), 0, 2))
        assert session.get(Blob, "ab" * 32).data == b"\x00\xff\n"
        if session.connection().dialect.name == "sqlite":
            found = session.execute(text("SELECT rowid FROM articles_fts WHERE articles_fts MATCH 'jams'")).all()
        else:
            found = session.execute(text("SELECT id FROM articles WHERE search_vector @@ 'jams'::tsquery")).all()
        assert len(found) == 2  # the index follows every row of the multi-row INSERT


def test_insert_all_gives_each_row_its_own_id_in_order(rt):
    """`insert_all` (SQLite: ids set after the maximum; PostgreSQL: ids from the table's sequence, rows by COPY)."""
    with rt.db.session() as session:
        account = Account(address="desk@x.test")
        session.add(account)
        session.flush()
        ticket_id = _ticket(session, account.id)
        conn = session.connection()
        first = bulk_insert.insert_all(conn, Article, _rows(account.id, ticket_id, 0, 5))
        second = bulk_insert.insert_all(conn, Article, _rows(account.id, ticket_id, 5, 40))
        ids = first + second
        assert len(set(ids)) == 45 and ids == sorted(ids)
        stored = dict(session.execute(select(Article.id, Article.message_id)).all())
        assert [stored[i] for i in ids] == [f"<m{i}@x>" for i in range(45)]
        assert bulk_insert.insert_all(conn, Article, []) == []


def test_text_with_nul_and_rows_the_orm_adds_afterwards(rt):
    """PostgreSQL's text cannot hold NUL: COPY stores U+FFFD instead, as every other write does (db.py). The ids
    that insert_all took are the sequence's, so a row the ORM adds afterwards gets a new one."""
    with rt.db.session() as session:
        account = Account(address="desk@x.test")
        session.add(account)
        session.flush()
        ticket_id = _ticket(session, account.id)
        rows = _rows(account.id, ticket_id, 0, 3)
        rows[1]["subject"] = "Printer\x00jams"
        ids = bulk_insert.insert_all(session.connection(), Article, rows)
        later = Article(account_id=account.id, ticket_id=ticket_id, direction="out", message_id="<later@x>")
        session.add(later)
        session.flush()
        assert later.id not in ids and later.id > max(ids)
        subject = session.scalar(select(Article.subject).where(Article.id == ids[1]))
    expected = "Printer\x00jams" if rt.db.is_sqlite else "Printer\ufffdjams"
    assert subject == expected
