"""`python -m bench.raw_storage [--mails 10000] [--batch 500]`: where raw mail should live in PostgreSQL.

With SQLite the sync writes raw mail to pack files beside the database (connector/blobs.py); with
PostgreSQL every byte stays in the database, because worker machines share no disk. This measures
the ways PostgreSQL can hold it, on the same mails (the corpus in ../shared/corpus/zammad-mail,
cycled, each copy made unique by a header line so that nothing deduplicates):

- `bytea` in `blobs` as the schema has it (storage EXTENDED: TOASTed out of line, compressed with
  the server's default, pglz);
- the same with `COMPRESSION lz4` (PostgreSQL 14+);
- the same with `STORAGE EXTERNAL` (out of line, never compressed: attachments in mail are mostly
  already compressed and base64-encoded, which LZ compressors gain little on);
- a separate `blob_data` table beside a narrow `blobs` (two inserts a mail);
- large objects (`lo_from_bytea`, the `blobs` row keeping the oid).

For each: the time to write every mail in committed batches (as a big import does), the server's
and this process's CPU for it, the space on disk (table, TOAST and indexes; pg_largeobject for large
objects), and the time to read 1,000 mails one by one in random order (opening a mail) and in
batches of 50 (body extraction). The server is a private cluster made with initdb (durable: fsync
and full page writes on, as in production), or the one in CONNECTOR_BENCH_DATABASE_URL.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import random
import resource
import sys
import time
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support import postgres as pg  # noqa: E402

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "zammad-mail"
DURABLE = dict(pg.SERVER_SETTINGS, fsync="on", synchronous_commit="on", full_page_writes="on",
               max_connections="20")
READS = 1000
READ_BATCH = 50

VARIANTS = {
    "bytea, EXTENDED (pglz)": [
        "CREATE TABLE blobs (sha256 varchar(64) PRIMARY KEY, size bigint NOT NULL, data bytea NOT NULL)"],
    "bytea, EXTENDED, lz4": [
        "CREATE TABLE blobs (sha256 varchar(64) PRIMARY KEY, size bigint NOT NULL, data bytea NOT NULL)",
        "ALTER TABLE blobs ALTER COLUMN data SET COMPRESSION lz4"],
    "bytea, EXTERNAL (uncompressed)": [
        "CREATE TABLE blobs (sha256 varchar(64) PRIMARY KEY, size bigint NOT NULL, data bytea NOT NULL)",
        "ALTER TABLE blobs ALTER COLUMN data SET STORAGE EXTERNAL"],
    "separate blob_data table": [
        "CREATE TABLE blobs (sha256 varchar(64) PRIMARY KEY, size bigint NOT NULL)",
        "CREATE TABLE blob_data (sha256 varchar(64) PRIMARY KEY REFERENCES blobs, data bytea NOT NULL)"],
    "large objects": [
        "CREATE TABLE blobs (sha256 varchar(64) PRIMARY KEY, size bigint NOT NULL, data_oid oid NOT NULL)"],
}


class Mails:
    """`count` unique mails made from the corpus on demand (a large run does not hold them all in memory)."""

    def __init__(self, count: int) -> None:
        self.sources = [p.read_bytes() for p in sorted(CORPUS.glob("*.box"))]
        if not self.sources:
            raise SystemExit(f"the mail corpus is not at {CORPUS}")
        self.count = count

    def __getitem__(self, i: int) -> bytes:
        return b"X-Bench-Copy: %d\r\n" % i + self.sources[i % len(self.sources)]

    def megabytes(self) -> float:
        return sum(len(self[i]) for i in range(self.count)) / 2**20


def write(conn: psycopg.Connection, variant: str, batch: list[tuple[str, bytes]]) -> None:
    with conn.cursor() as cur:
        if variant == "separate blob_data table":
            cur.executemany("INSERT INTO blobs (sha256, size) VALUES (%s, %s)", [(d, len(b)) for d, b in batch])
            cur.executemany("INSERT INTO blob_data (sha256, data) VALUES (%s, %s)", batch)
        elif variant == "large objects":
            cur.executemany("INSERT INTO blobs (sha256, size, data_oid) VALUES (%s, %s, lo_from_bytea(0, %s))",
                            [(d, len(b), b) for d, b in batch])
        else:
            cur.executemany("INSERT INTO blobs (sha256, size, data) VALUES (%s, %s, %s)",
                            [(d, len(b), b) for d, b in batch])
    conn.commit()


def read_sql(variant: str, many: bool) -> str:
    where = "b.sha256 = ANY(%s)" if many else "b.sha256 = %s"
    if variant == "separate blob_data table":
        return f"SELECT d.data FROM blobs b JOIN blob_data d USING (sha256) WHERE {where}"
    if variant == "large objects":
        return f"SELECT lo_get(b.data_oid) FROM blobs b WHERE {where}"
    return f"SELECT b.data FROM blobs b WHERE {where}"


def disk_bytes(conn: psycopg.Connection, variant: str) -> int:
    tables = ["blobs", "blob_data"] if variant == "separate blob_data table" else ["blobs"]
    if variant == "large objects":
        tables.append("pg_largeobject")
    with conn.cursor() as cur:
        return sum(cur.execute("SELECT pg_total_relation_size(%s)", (t,)).fetchone()[0] for t in tables)


def server_cpu(pids: list[int]) -> float:
    """CPU seconds used so far by these server processes (the postmaster's children, one per connection)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def measure(server: pg.PostgresServer, variant: str, data: Mails, batch_size: int) -> dict:
    url = server.create_database(migrated=False)
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(dsn) as conn:
            for statement in VARIANTS[variant]:
                conn.execute(statement)
            conn.commit()
            backend = conn.info.backend_pid
            digests: dict[str, int] = {}
            rates = []  # MB/s of each batch: does writing slow down as the table grows?
            cpu0, mine0, t0 = server_cpu([backend]), _own_cpu(), time.perf_counter()
            for start in range(0, data.count, batch_size):
                batch = [data[i] for i in range(start, min(data.count, start + batch_size))]
                keyed = [(hashlib.sha256(raw).hexdigest(), raw) for raw in batch]
                digests.update((d, start + n) for n, (d, _) in enumerate(keyed))
                began = time.perf_counter()
                write(conn, variant, keyed)
                rates.append(sum(map(len, batch)) / 2**20 / (time.perf_counter() - began))
            seconds = time.perf_counter() - t0
            tenth = max(1, len(rates) // 10)
            written = {"write_s": seconds, "server_cpu_s": server_cpu([backend]) - cpu0,
                       "client_cpu_s": _own_cpu() - mine0, "first_tenth_mb_s": sum(rates[:tenth]) / tenth,
                       "last_tenth_mb_s": sum(rates[-tenth:]) / tenth}
            conn.autocommit = True
            conn.execute("VACUUM ANALYZE")
            conn.execute("CHECKPOINT")
            conn.autocommit = False
            size = disk_bytes(conn, variant)
            rng = random.Random(7)
            sample = rng.sample(sorted(digests), min(READS, len(digests)))
            t0 = time.perf_counter()
            for digest in sample:
                got = conn.execute(read_sql(variant, many=False), (digest,)).fetchone()[0]
                assert bytes(got) == data[digests[digest]]
            one_by_one = time.perf_counter() - t0
            t0 = time.perf_counter()
            for start in range(0, len(sample), READ_BATCH):
                part = sample[start:start + READ_BATCH]
                got = conn.execute(read_sql(variant, many=True), (part,)).fetchall()
                assert len(got) == len(part)
            batched = time.perf_counter() - t0
            conn.rollback()
        return dict(written, disk_mb=size / 2**20, read_one_ms=one_by_one / len(sample) * 1000,
                    read_batch_ms=batched / (len(sample) / READ_BATCH) * 1000)
    finally:
        server.drop_database(url)


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.raw_storage", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mails", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500, help="mails a committed batch (default 500)")
    parser.add_argument("--only", choices=list(VARIANTS), action="append")
    args = parser.parse_args(argv)
    data = Mails(args.mails)
    total_mb = data.megabytes()
    given = os.environ.get("CONNECTOR_BENCH_DATABASE_URL")
    if given:
        os.environ[pg.ENV_URL] = given
    else:
        os.environ.pop(pg.ENV_URL, None)
    server = pg.PostgresServer.provision(settings=DURABLE)
    try:
        print(f"{args.mails:,} mails, {total_mb:.0f} MB, batches of {args.batch}, PostgreSQL {server.version}",
              flush=True)
        print("| storage | write | MB/s (first, last tenth) | server CPU | client CPU | on disk | read one | read 50 |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for variant in args.only or list(VARIANTS):
            r = measure(server, variant, data, args.batch)
            print(f"| {variant} | {r['write_s']:.1f} s | {total_mb / r['write_s']:.0f} ({r['first_tenth_mb_s']:.0f}, "
                  f"{r['last_tenth_mb_s']:.0f}) | {r['server_cpu_s']:.1f} s | {r['client_cpu_s']:.1f} s "
                  f"| {r['disk_mb']:.0f} MB | {r['read_one_ms']:.2f} ms | {r['read_batch_ms']:.1f} ms |", flush=True)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
