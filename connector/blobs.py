"""Where stored bytes live: the `blobs` table, or, for raw mail fetched by the sync into the
embedded SQLite database, pack files in a folder next to the database (`connector.db` ->
`connector-blobs/`).

Why packs: SQLite has one writer, and pushing a 440 MB mailbox through it costs more CPU than
fetching it (every page goes to the WAL and again into the database) while holding the write lock
that the web app needs too. The sync's fetching thread appends a batch's raw mails to one new pack
file while the database stores the previous batch, and makes it durable (fsync) before the commit
whose `blobs` rows point into it, so a committed article always has its raw mail. One file per
batch rather than per mail: creating thousands of small files costs more than writing the bytes.
A pack is written under a temporary name and renamed, never changed afterwards; a read checks the
SHA-256 of what it reads. The `blobs` row stays either way (size, `pack`, `pack_offset`), so foreign
keys and deduplication work as before. A pack whose batch turned out to hold only mails already
imported is deleted again; one left by a crash before its commit is unreferenced and harmless.

PostgreSQL keeps every byte in the database (`blobs.data`, lz4-compressed: revision 0006): it takes
concurrent writers, and several worker machines share it, which they could not do with a local folder.
`BlobFiles.for_bind` gives no folder for it, and `bulk_insert.store_blobs` refuses pack references there.
A backlog's raw mail is committed there ahead of its batch, over other connections (raw_writer.py).
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from .models import Blob

log = logging.getLogger(__name__)
FOLDER_SUFFIX = "-blobs"

_PACK_NAME = re.compile(r"[0-9]{14}-[0-9a-f]{32}")


@dataclass(frozen=True)
class Packed:
    """Where one blob was written ahead of the batch that refers to it: its SHA-256, the pack and the offset of
    its bytes in it (SQLite), or no pack (None) when it is committed in the `blobs` table already (PostgreSQL's
    raw writers, raw_writer.py)."""
    sha256: str
    size: int
    pack: str | None
    offset: int


class BlobFiles:
    """A folder of pack files: blobs back to back, each found by (pack, offset, size)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def for_bind(cls, bind) -> "BlobFiles | None":
        """The folder that goes with this engine's database; None unless it is an SQLite file."""
        url = make_url(str(getattr(bind, "engine", bind).url))
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:" \
                or url.database.startswith("file:"):
            return None
        database = Path(url.database)
        return cls(database.with_name(database.stem + FOLDER_SUFFIX))

    def path(self, pack: str) -> Path:
        """`<root>/<year and month>/<pack>.pack`: a folder a month keeps each one to a browsable size."""
        if not _PACK_NAME.fullmatch(pack):
            raise ValueError(f"not a pack name: {pack!r}")
        return self.root / pack[:6] / f"{pack}.pack"

    def write_pack(self, items: list[bytes]) -> list[Packed]:
        """Append these blobs to a new pack file and make it durable; returns where each one is."""
        name = f"{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{uuid.uuid4().hex}"
        final = self.path(name)
        self.root.mkdir(mode=0o700, exist_ok=True)
        final.parent.mkdir(mode=0o700, exist_ok=True)
        temporary = final.with_suffix(".tmp")
        placed: list[Packed] = []
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            offset = 0
            for data in items:
                placed.append(Packed(digest(data), len(data), name, offset))
                offset += len(data)
            _write_all(fd, items)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            temporary.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(temporary, final)
        directory = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself
        finally:
            os.close(directory)
        return placed

    def read(self, pack: str, offset: int, size: int, sha256: str) -> bytes | None:
        """The blob's bytes, or None if the pack is missing or they do not match their SHA-256."""
        try:
            with open(self.path(pack), "rb") as f:
                f.seek(offset)
                data = f.read(size)
        except (FileNotFoundError, ValueError):
            return None
        return data if len(data) == size and digest(data) == sha256 else None

    def delete_pack(self, pack: str) -> None:
        self.path(pack).unlink(missing_ok=True)


def _write_all(fd: int, items: list[bytes]) -> None:
    """Write the blobs back to back with as few system calls as the OS allows (one `writev` for up to
    IOV_MAX of them): each call gives up the GIL and must wait to get it back, which adds up over
    the thousands of mails of a big import. `writev` may write less than asked; the rest follows."""
    views = [memoryview(data) for data in items if data]
    limit = os.sysconf("SC_IOV_MAX")
    first = 0
    while first < len(views):
        written = os.writev(fd, views[first:first + limit])
        while first < len(views) and written >= len(views[first]):
            written -= len(views[first])
            first += 1
        if written:
            views[first] = views[first][written:]


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_blob(session: Session, sha256: str | None) -> bytes | None:
    """The stored bytes, from the table or from a pack; None if there are none (logged if lost)."""
    if not sha256:
        return None
    row = session.get(Blob, sha256)
    if row is None:
        return None
    if row.pack is None:
        return row.data
    files = BlobFiles.for_bind(session.get_bind())
    data = files.read(row.pack, row.pack_offset, row.size, sha256) if files is not None else None
    if data is None:
        log.error("blob %s is missing or damaged in pack %s", sha256, row.pack)
    return data
