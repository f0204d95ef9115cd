"""Pack files for raw mail (connector/blobs.py): exact bytes back, damage detected, never a partial pack."""
from __future__ import annotations

import hashlib
import logging
import os
from types import SimpleNamespace

import pytest
from sqlalchemy import create_engine

from connector.blobs import BlobFiles, Packed, read_blob
from connector import bulk_insert


def test_a_pack_gives_back_each_blob_byte_for_byte(tmp_path):
    files = BlobFiles(tmp_path / "connector-blobs")
    items = [b"first mail\r\n", b"", b"\x00\xff" * 5000, b"last"]
    placed = files.write_pack(items)
    assert [p.size for p in placed] == [len(i) for i in items]
    assert [p.offset for p in placed] == [0, 12, 12, 10012]
    assert len({p.pack for p in placed}) == 1
    for data, where in zip(items, placed):
        assert where.sha256 == hashlib.sha256(data).hexdigest()
        assert files.read(where.pack, where.offset, where.size, where.sha256) == data
    month = files.root / placed[0].pack[:6]
    assert [p.name for p in month.iterdir()] == [f"{placed[0].pack}.pack"]  # no temporary file left
    assert oct(files.root.stat().st_mode & 0o777) == oct(month.stat().st_mode & 0o777) == "0o700"
    assert oct(files.path(placed[0].pack).stat().st_mode & 0o777) == "0o600"


def test_short_writes_are_continued_where_they_stopped(tmp_path, mocker):
    """writev may write less than asked (a signal, a full pipe, a disk quota): the rest follows, in order."""
    real = os.writev
    calls = []

    def short(fd, buffers):
        calls.append(len(buffers))
        return real(fd, [bytes(buffers[0][:7])])  # at most 7 bytes of the first buffer each time

    mocker.patch("connector.blobs.os.writev", side_effect=short)
    files = BlobFiles(tmp_path / "blobs")
    items = [b"first mail\r\n", b"", b"\x00\xff" * 20, b"last"]
    placed = files.write_pack(items)
    assert files.path(placed[0].pack).read_bytes() == b"".join(items)
    assert len(calls) == 2 + 6 + 1  # 12, 40 and 4 bytes in pieces of 7


def test_more_blobs_than_one_writev_takes(tmp_path, monkeypatch):
    sysconf = os.sysconf
    monkeypatch.setattr(os, "sysconf", lambda name: 3 if name == "SC_IOV_MAX" else sysconf(name))
    files = BlobFiles(tmp_path / "blobs")
    items = [f"mail {i}\n".encode() for i in range(10)]
    placed = files.write_pack(items)
    assert files.path(placed[0].pack).read_bytes() == b"".join(items)
    assert [files.read(p.pack, p.offset, p.size, p.sha256) for p in placed] == items


def test_damaged_or_missing_packs_read_as_none(tmp_path):
    files = BlobFiles(tmp_path / "blobs")
    (where,) = files.write_pack([b"precious"])
    path = files.path(where.pack)
    path.write_bytes(b"precioua")
    assert files.read(where.pack, where.offset, where.size, where.sha256) is None
    path.write_bytes(b"prec")
    assert files.read(where.pack, where.offset, where.size, where.sha256) is None
    path.unlink()
    assert files.read(where.pack, where.offset, where.size, where.sha256) is None


@pytest.mark.parametrize("name", ["../../etc/passwd", "x", "20261122080000-" + "g" * 32, ""])
def test_pack_names_cannot_leave_the_folder(tmp_path, name):
    with pytest.raises(ValueError):
        BlobFiles(tmp_path).path(name)
    assert BlobFiles(tmp_path).read(name, 0, 1, "0" * 64) is None


def test_a_failed_write_leaves_nothing(tmp_path, mocker):
    files = BlobFiles(tmp_path / "blobs")
    mocker.patch("connector.blobs.os.fsync", side_effect=OSError(28, "No space left on device"))
    with pytest.raises(OSError):
        files.write_pack([b"a", b"b"])
    assert [p for p in files.root.rglob("*") if p.is_file()] == []


def test_only_an_sqlite_file_database_gets_a_folder(tmp_path):
    assert BlobFiles.for_bind(create_engine(f"sqlite:///{tmp_path}/data/connector.db")).root \
        == tmp_path / "data" / "connector-blobs"
    assert BlobFiles.for_bind(create_engine("sqlite://")) is None
    assert BlobFiles.for_bind(create_engine("sqlite:///:memory:")) is None
    assert BlobFiles.for_bind(SimpleNamespace(url="postgresql+psycopg://u:p@db.example/connector")) is None


SQLITE_PACKS = pytest.mark.backends("sqlite", reason="pack files exist only beside an SQLite database")


@SQLITE_PACKS
def test_read_blob_takes_the_bytes_from_the_table_or_the_pack(rt, caplog):
    files = BlobFiles.for_bind(rt.db.engine)
    (where,) = files.write_pack([b"raw mail in a pack"])
    with rt.db.session() as session:
        conn = session.connection()
        in_table = hashlib.sha256(b"raw mail in the table").hexdigest()
        bulk_insert.store_blobs(conn, {in_table: b"raw mail in the table"}, {where.sha256: where})
    with rt.db.session() as session:
        assert read_blob(session, in_table) == b"raw mail in the table"
        assert read_blob(session, where.sha256) == b"raw mail in a pack"
        assert read_blob(session, None) is None
        assert read_blob(session, "0" * 64) is None
    os.remove(files.path(where.pack))
    with caplog.at_level(logging.ERROR, logger="connector.blobs"), rt.db.session() as session:
        assert read_blob(session, where.sha256) is None
    assert f"blob {where.sha256} is missing or damaged in pack {where.pack}" in caplog.text


@SQLITE_PACKS
def test_a_blob_stored_twice_keeps_its_first_place(rt):
    files = BlobFiles.for_bind(rt.db.engine)
    (first,) = files.write_pack([b"same bytes"])
    (second,) = files.write_pack([b"same bytes"])
    with rt.db.session() as session:
        bulk_insert.store_blobs(session.connection(), {}, {first.sha256: first})
        bulk_insert.store_blobs(session.connection(), {}, {second.sha256: Packed(second.sha256, second.size,
                                                                             second.pack, second.offset)})
    from connector.models import Blob

    with rt.db.session() as session:
        assert session.get(Blob, first.sha256).pack == first.pack


@pytest.mark.backends("postgresql", reason="what PostgreSQL does instead of pack files")
def test_postgresql_keeps_every_byte_in_the_table_and_refuses_packs(rt):
    """No pack files beside PostgreSQL (workers on other machines share no disk): the bytes go in the
    table, exactly, and a pack reference is refused rather than stored where other machines cannot read."""
    assert BlobFiles.for_bind(rt.db.engine) is None
    data = {hashlib.sha256(raw).hexdigest(): raw for raw in (b"\x00raw mail\r\n\xff" * 1000, b"", b"x")}
    with rt.db.session() as session:
        bulk_insert.store_blobs(session.connection(), data)
    with rt.db.session() as session:
        for digest, raw in data.items():
            assert read_blob(session, digest) == raw
        with pytest.raises(ValueError, match="pack files are for the embedded SQLite database only"):
            bulk_insert.store_blobs(session.connection(), {}, {"ab" * 32: Packed("ab" * 32, 1, "p", 0)})


@pytest.mark.backends("postgresql", reason="a PostgreSQL storage setting")
def test_raw_mail_is_stored_compressed_with_lz4_on_postgresql(rt):
    """Revision 0006: pglz compressed raw mail 4-5 times slower than lz4 (bench/raw_storage.py)."""
    from sqlalchemy import text

    raw = b"Subject: compressible\r\n\r\n" + b"the same line of text again and again\r\n" * 5000
    digest = hashlib.sha256(raw).hexdigest()
    with rt.db.session() as session:
        bulk_insert.store_blobs(session.connection(), {digest: raw})
    with rt.db.session() as session:
        method, stored = session.execute(text("SELECT pg_column_compression(data), pg_column_size(data) FROM blobs "
                                              "WHERE sha256 = :d"), {"d": digest}).one()
    assert method == "lz4" and stored < len(raw) / 10


def _while_a_first_writer_holds(rt, digest: str, data: bytes, second):
    """Run `second()` in a thread while another transaction has stored `data` and not committed yet; check
    that it waits for that row, commit the first, and give what `second` returned (or the repr of what it
    raised)."""
    import threading

    outcome = {}

    def run():
        try:
            outcome["second"] = second()
        except Exception as exc:  # noqa: BLE001 - reported by the caller's assertion
            outcome["second"] = repr(exc)

    first = rt.db.sessionmaker()
    try:
        bulk_insert.store_blobs(first.connection(), {digest: data})
        thread = threading.Thread(target=run)
        thread.start()
        thread.join(timeout=1)
        assert thread.is_alive()  # waiting for the first writer's row
        first.commit()
    finally:
        first.close()
    thread.join(timeout=20)
    return outcome.get("second", "still waiting after 20 s")


@pytest.mark.backends("postgresql", reason="only PostgreSQL has concurrent writers")
def test_two_writers_storing_the_same_bytes_both_commit(rt):
    """The same attachment arriving in two mailboxes at once: the second writer waits for the first and
    keeps its row, rather than failing on the primary key (and losing its batch)."""
    from sqlalchemy import text

    data = b"%PDF-1.4 the same invoice in two mailboxes"
    digest = hashlib.sha256(data).hexdigest()

    def second_writer():
        with rt.db.session() as second:
            second.execute(text("SET LOCAL lock_timeout = '20s'"))
            bulk_insert.store_blobs(second.connection(), {digest: data})
        return "committed"

    assert _while_a_first_writer_holds(rt, digest, data, second_writer) == "committed"
    with rt.db.session() as session:
        assert read_blob(session, digest) == data


@pytest.mark.backends("postgresql", reason="the raw writers write PostgreSQL's table (raw_writer.py)")
def test_the_raw_writer_commits_each_mail_once_byte_for_byte(rt):
    """Binary COPY, committed by the writer itself; bytes stored already (a retry after a kill) are not
    written again, and the result gives each mail's SHA-256 in order, duplicates included."""
    from sqlalchemy import func, select

    from connector import raw_writer
    from connector.models import Blob

    mails = [b"\x00raw mail\r\n\xff" * 1000, b"Subject: x\r\n\r\nbody", b"\x00raw mail\r\n\xff" * 1000]
    first = raw_writer.write(rt.db.engine, mails)
    assert [p.sha256 for p in first] == [hashlib.sha256(m).hexdigest() for m in mails]
    assert [(p.size, p.pack) for p in first] == [(len(m), None) for m in mails]
    again = raw_writer.submit(rt.db.engine, mails[1:] + [b"a third mail"]).result(timeout=30)
    assert [p.sha256 for p in again] == [hashlib.sha256(m).hexdigest() for m in mails[1:] + [b"a third mail"]]
    with rt.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Blob)) == 3
        for mail in mails + [b"a third mail"]:
            assert read_blob(session, hashlib.sha256(mail).hexdigest()) == mail
        # and a batch that refers to them stores nothing more
        bulk_insert.store_blobs(session.connection(), {}, {p.sha256: p for p in first})
        assert session.scalar(select(func.count()).select_from(Blob)) == 3


@pytest.mark.backends("postgresql", reason="only PostgreSQL has concurrent writers")
def test_the_raw_writer_commits_when_another_writer_stores_the_same_bytes_meanwhile(rt):
    """Its COPY meets the other transaction's row: it waits, then takes the slow way (ON CONFLICT DO NOTHING)
    instead of failing the batch."""
    from connector import raw_writer

    data = b"the same raw mail in two mailboxes"
    digest = hashlib.sha256(data).hexdigest()

    def writer():
        return [p.sha256 for p in raw_writer.write(rt.db.engine, [data, b"another mail"])]

    assert _while_a_first_writer_holds(rt, digest, data, writer) == [digest, hashlib.sha256(b"another mail").hexdigest()]
    with rt.db.session() as session:
        assert read_blob(session, digest) == data
        assert read_blob(session, hashlib.sha256(b"another mail").hexdigest()) == b"another mail"


def test_binary_rows_are_the_rows_of_the_query(rt):
    """PostgreSQL: received in binary format (bytea as bytes, not hex), the same values as SQLAlchemy's."""
    from sqlalchemy import case, select

    from connector.models import Blob

    data = {hashlib.sha256(raw).hexdigest(): raw for raw in (b"\x00\xff" * 3000, b"", b"plain text")}
    with rt.db.session() as session:
        bulk_insert.store_blobs(session.connection(), data)
    query = (select(Blob.sha256, Blob.size, Blob.pack, case((Blob.pack.is_(None), Blob.data), else_=None))
             .where(Blob.sha256.in_(list(data))).order_by(Blob.sha256))
    with rt.db.session() as session:
        rows = bulk_insert.binary_rows(session.connection(), query)
        assert rows == [tuple(row) for row in session.execute(query).all()]
    assert rows == [(digest, len(data[digest]), None, data[digest]) for digest in sorted(data)]
    assert all(type(row[3]) is bytes for row in rows)
