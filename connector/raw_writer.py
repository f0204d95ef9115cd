"""PostgreSQL: a backlog's raw mail written into `blobs.data` over connections of its own, in parallel with
the storing of the batch before it, each batch's raw mail committed before the batch that refers to it.

Why: with the raw mail inside the batch's transaction, one connection wrote about 9 MB for every 200 mails
(compressed by the server, into the WAL, fsynced at commit) before the next batch could start, which held a
first import on PostgreSQL to 0.15 of the raw fetch rate (BENCHMARKS.md, section 6.1). Here the fetching
thread hands each fetched batch's raw mail to `RAW_WRITERS` threads shared by the whole process, each of
which writes one batch with binary COPY on a pooled connection and commits it, while the storing thread
ingests and commits the batch before. The batch's own transaction then writes only its ticket rows.

Why nothing is lost or doubled:
- the storing thread commits a batch only after its raw mail's transaction has committed (it waits for
  `write`'s result; a failed write fails the pass before that batch's commit, with `last_uid` unmoved);
- `articles.raw_sha256` references `blobs` by foreign key, so an article cannot be committed without its
  raw mail even if that order were broken (the database refuses it);
- a kill between the two commits leaves raw mail without articles: the next pass fetches the same mails
  (the high-water mark did not move), finds their bytes stored under the same SHA-256 and writes nothing
  twice. Raw mail that no article ever refers to (its mail deleted from the mailbox before the retry, or a
  copy whose Message-ID was already known) stays as unreferenced bytes, as a crash leaves a pack file
  behind on SQLite (blobs.py).

SQLite keeps its pack files (blobs.py); a batch smaller than a backlog's keeps its raw mail in its own
transaction (one commit, one fsync, for the mail that arrives one at a time).
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from .blobs import Packed, digest

if TYPE_CHECKING:  # psycopg is only installed with PostgreSQL (`connector[postgresql]`)
    import psycopg

RAW_WRITERS = 2  # batches written at once, per process: each is a connection and a server process busy
_COPY = "COPY blobs (sha256, size, data) FROM STDIN (FORMAT BINARY)"
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def submit(engine: Engine, raws: list[bytes]) -> Future:
    """Start writing these raw mails (a thread of the process's writers); the future gives `write`'s result."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(RAW_WRITERS, thread_name_prefix="raw-writer")
    return _pool.submit(write, engine, raws)


class NotStored(Exception):
    """The raw mail of a batch could not be committed (the database refused it or could not be reached)."""


def write(engine: Engine, raws: list[bytes]) -> list[Packed]:
    """Store these raw mails in `blobs` and commit; returns for each mail its SHA-256 as a `Packed` with no
    pack (`Packed.pack` None: committed in the table). Bytes stored already are not written again.
    Raises NotStored, naming the database's reason, if the commit did not happen."""
    import psycopg
    from sqlalchemy.exc import DBAPIError

    keys = [digest(raw) for raw in raws]
    unique = dict(zip(keys, raws))
    try:
        connection = engine.raw_connection()  # pooled: a connection of this engine, apart from the batch's
        try:
            conn: psycopg.Connection = connection.driver_connection
            try:
                _copy_missing(conn, unique)
            except psycopg.errors.UniqueViolation:  # another writer stored some of the same bytes meanwhile
                conn.rollback()
                _insert_missing(conn, unique)
            conn.commit()
        finally:
            connection.close()  # back to the pool (rolled back if anything failed)
    except (psycopg.Error, DBAPIError) as exc:
        raise NotStored(str(getattr(exc, "orig", None) or exc).strip()) from exc
    return [Packed(key, len(raw), None, 0) for key, raw in zip(keys, raws)]


def _missing(conn: psycopg.Connection, blobs: dict[str, bytes]) -> list[str]:
    stored = {row[0] for row in conn.execute("SELECT sha256 FROM blobs WHERE sha256 = ANY(%s)", (list(blobs),))}
    return [key for key in blobs if key not in stored]


def _copy_missing(conn: psycopg.Connection, blobs: dict[str, bytes]) -> None:
    """Binary COPY: the bytes go as they are (no hex text to encode here and parse on the server), and the
    server takes the rows as one stream instead of a statement with thousands of parameters."""
    missing = _missing(conn, blobs)
    if not missing:
        return
    with conn.cursor() as cursor, cursor.copy(_COPY) as copy:
        copy.set_types(["text", "int8", "bytea"])
        for key in missing:
            copy.write_row((key, len(blobs[key]), blobs[key]))


def _insert_missing(conn: psycopg.Connection, blobs: dict[str, bytes]) -> None:
    """The slow way, for a batch that raced another writer on the same bytes: each row waits for the other
    transaction and is skipped if it committed the same key."""
    with conn.cursor() as cursor:
        cursor.executemany("INSERT INTO blobs (sha256, size, data) VALUES (%s, %s, %b) ON CONFLICT (sha256) "
                           "DO NOTHING", [(key, len(blobs[key]), blobs[key]) for key in _missing(conn, blobs)])
