"""Rows written many at a time: content-addressed blobs, multi-row INSERTs, chunked lookups.

Used by the import (ingest.py), body extraction (extract.py) and the outbox; nothing here knows
about tickets' rules, only how to get many rows into either database quickly and correctly.
"""
from __future__ import annotations

import hashlib
import sqlite3
from datetime import datetime, timezone

from sqlalchemy import func, insert, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from .blobs import Packed
from .mail.parse import Part
from .models import Blob

SQLITE_MAX_VARIABLES = 32766 if sqlite3.sqlite_version_info >= (3, 32) else 999  # bound parameters a statement


def store_blob(session: Session, data: bytes) -> str:
    """Store bytes once by content hash; written at once because rows refer to it by foreign key only."""
    digest = hashlib.sha256(data).hexdigest()
    session.flush()
    store_blobs(session.connection(), {digest: data})
    return digest


def store_blobs(conn, blobs: dict[str, bytes], packed: dict[str, Packed] | None = None) -> None:
    """Store many blobs (by sha256) with one lookup and one multi-row INSERT of those not stored yet.

    `packed`: blobs whose bytes are already written to a pack file (blobs.py), by sha256; or, with no pack,
    committed in the table already (PostgreSQL's raw writers, raw_writer.py): nothing to write for those,
    and the foreign keys that refer to them make the database check that they are there. On PostgreSQL
    another transaction may be storing the same bytes at the same time (the same attachment arriving in
    two mailboxes): ON CONFLICT DO NOTHING lets the second one wait for the first and keep its row.
    """
    packed = {key: where for key, where in (packed or {}).items() if where.pack is not None}
    if packed and conn.dialect.name != "sqlite":
        raise ValueError("pack files are for the embedded SQLite database only: with a database server the "
                         "bytes go in the table, where every worker machine can read them")
    if blobs or packed:
        stored = {row[0] for row in lookup(conn, select(Blob.sha256), Blob.sha256, set(blobs) | set(packed))}
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


def insert_all(conn, model, rows: list[dict]) -> list[int]:
    """Insert rows; their new ids, in row order.

    SQLite: the ids are set here, consecutive after the current maximum (safe: every transaction
    holds the write lock from its BEGIN IMMEDIATE, see db.py), so the rows go in with `insert_rows`.
    INSERT ... RETURNING in row order would cost SQLite one statement per row. PostgreSQL: the ids are
    taken from the table's sequence in one statement (other writers take theirs meanwhile: they need not
    be consecutive), and the rows go in with `insert_rows` (COPY). Elsewhere: INSERT ... RETURNING in row order.
    """
    if not rows:
        return []
    if conn.dialect.name == "sqlite":
        first = (conn.execute(select(func.max(model.id))).scalar() or 0) + 1
        ids = list(range(first, first + len(rows)))
    elif _psycopg(conn):
        ids = list(conn.execute(text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :n)"),
                                {"table": model.__table__.name, "n": len(rows)}).scalars())
    else:
        return [row[0] for row in conn.execute(insert(model).returning(model.id, sort_by_parameter_order=True), rows)]
    insert_rows(conn, model, [dict(row, id=new_id) for row, new_id in zip(rows, ids)])
    return ids


def insert_rows(conn, model, rows: list[dict]) -> None:
    """Insert rows (all with the same keys; other columns take their defaults), returning nothing.

    SQLite: one multi-row INSERT ... VALUES per chunk of rows, so that one statement step writes
    the chunk. An executemany steps once per row, and the sqlite3 module gives up the GIL around
    every step: while the sync's fetching thread runs Python, each step then waited to get the GIL
    back, which measured here at more than half of the import's time. The statement text is built
    here because SQLAlchemy's multi-row `values()` costs milliseconds of compiling per batch; the
    parameters still go through each column type's bind processor for this dialect (SQLAlchemy's own
    `DateTime` alone would let sqlite3 write another text form).
    PostgreSQL with psycopg: COPY (text format), the values through the same bind processors. A multi-row
    INSERT has thousands of parameters, and psycopg rewrote its text for every batch (statements that
    long are not cached): 0.8 s of the 1.8 s that ingesting 4,000 mails took, profiled. Elsewhere: executemany.
    """
    if not rows:
        return
    if conn.dialect.name != "sqlite" and not _psycopg(conn):
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
    fixed = list(defaults.values())

    def values(part: list[dict]):
        for row in part:
            yield [value if process is None else process(value)
                   for process, value in zip(processors, [row[name] for name in given] + fixed)]
    if conn.dialect.name != "sqlite":
        with conn.connection.driver_connection.cursor() as cursor, cursor.copy(
                f"COPY {quote(table.name)} ({', '.join(quote(c.name) for c in columns)}) FROM STDIN") as copy:
            for row in values(rows):
                copy.write_row(row)
        return
    head = f"INSERT INTO {quote(table.name)} ({', '.join(quote(c.name) for c in columns)}) VALUES "
    one = "(" + ", ".join(["?"] * len(columns)) + ")"
    chunk = max(1, SQLITE_MAX_VARIABLES // len(columns))
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        flat = [value for row in values(part) for value in row]
        conn.exec_driver_sql(head + ", ".join([one] * len(part)), tuple(flat))


def _psycopg(conn) -> bool:
    """PostgreSQL through psycopg: rows go in with COPY, and bulk reads come back in binary format."""
    return conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg"


def binary_rows(conn, query) -> list[tuple]:
    """The rows of a SELECT; on PostgreSQL received in binary format.

    psycopg receives results as text unless asked otherwise, and `bytea` as text is hex: twice the bytes for
    the server to encode and send and for the client to decode. Reading raw mail back in bulk (the bodies
    extracted after a big import) took 3.5 times as long that way (0.59 s against 0.17 s for 2,000 mails,
    measured). Only for columns whose values need no conversion by SQLAlchemy: text, numbers, booleans, bytes.
    """
    if not _psycopg(conn):
        return list(conn.execute(query).all())
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    with conn.connection.driver_connection.cursor(binary=True) as cursor:
        cursor.execute(str(compiled), compiled.params)
        return [tuple(row) for row in cursor.fetchall()]


def lookup(conn, query, column, values: set, *where, chunk: int = 500):
    """Rows of `query` whose `column` is in `values`, in chunks that stay below SQL variable limits."""
    values = list(values)
    rows = []
    for start in range(0, len(values), chunk):
        rows.extend(conn.execute(query.where(column.in_(values[start:start + chunk]), *where)).all())
    return rows


def storable(value: str) -> str:
    """Text as both databases store it: PostgreSQL's text cannot hold NUL, which mail can carry (a header,
    a body in a mislabelled charset); U+FFFD takes its place everywhere, so lookups (Message-IDs,
    references) match what was stored on either database. db.py does the same for any other text sent
    to PostgreSQL."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def storables(values: dict) -> dict:
    """The string values of a row that hold NUL, made storable (see `storable`)."""
    return {key: storable(value) for key, value in values.items() if isinstance(value, str) and "\x00" in value}


def naive_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


