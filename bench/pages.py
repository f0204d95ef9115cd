"""Benchmark 4: agent pages over a large history.

The database (migrated by the app, so with every index and search table of the schema) is filled
with tickets of 1 to 5 articles (mean 3) in 20 mailboxes: on SQLite 100,000 tickets (about 300,000
articles), on PostgreSQL 1,000,000 articles (about 333,000 tickets). Bodies of 60-300 words drawn
from the words of the mail corpus, 10% of articles with an attachment, statuses 20% open / 10%
pending / 70% closed, activity spread over two years. That is the data set, not something timed:

- SQLite: plain SQL in transactions of about 20,000 articles (the search-index triggers fire as on
  ingest).
- PostgreSQL: COPY (psycopg's `cursor.copy`) in chunks of about 20,000 articles, each committed,
  over two connections at once; the generated `search_vector` column is computed by the server as
  on any insert. The schema's
  secondary indexes of tickets, articles and attachments (the GIN search and trigram indexes among
  them) are dropped for the load and recreated after it from their own definitions
  (`pg_get_indexdef`), as a bulk load is done; then VACUUM ANALYZE, as autovacuum would after it.

Then, as an agent who is a member of 15 of the 20 mailboxes, through the Flask app in process
(server time: the WSGI call, no network), each request is repeated R times in rotation:
- list: `GET /api/v1/tickets` (first page);
- search: `GET /api/v1/tickets?q=<an order number that is in one article>`;
- search (common word): `GET /api/v1/tickets?q=<a word in about 6% of articles>`;
- filter: `GET /api/v1/tickets?status=open&account=<a mailbox>`;
- view: `GET /api/v1/tickets/<id>` of a random visible ticket.
Reference, in the same loop: `GET /api/v1/accounts` (authenticated, one small query): the fixed
cost of any API request here.
"""
from __future__ import annotations

import itertools
import random
import re
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

from .database import describe
from .env import BenchEnv, percentile

SIZES = {  # (size, database) -> tickets (None: as many as the articles take), articles (None: 1-5 a ticket), repetitions
    ("tiny", "sqlite"): (1_000, None, 10),
    ("tiny", "postgresql"): (1_000, None, 10),
    ("full", "sqlite"): (100_000, None, 200),
    ("full", "postgresql"): (None, 1_000_000, 200),
}
MAILBOXES = 20
VISIBLE = 15
CHUNK_ARTICLES = 20_000
COPY_CONNECTIONS = 2  # this machine's cores
CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "zammad-mail"
TICKET_COLUMNS = ("id", "number", "account_id", "subject", "status", "customer_address", "customer_name",
                  "created_at", "updated_at", "article_count")
ARTICLE_COLUMNS = ("id", "ticket_id", "account_id", "direction", "message_id", "in_reply_to", "references",
                   "from_addr", "from_name", "to_addrs", "cc_addrs", "subject", "date", "body_text", "body_html",
                   "raw_sha256", "size", "is_auto", "is_bounce", "notes", "imap_uid", "author_id", "created_at")
ATTACHMENT_COLUMNS = ("article_id", "blob_sha256", "filename", "content_type", "size", "content_id", "inline")
ACCOUNT_INSERT = (
    "INSERT INTO accounts (address, display_name, token_owner, tenant_id, home_account_id, status, "
    "connected_at, created_at, folder, post_import_action, move_to_folder, last_uid, sync_total, sync_done, "
    "failure_count) VALUES (?, ?, '', '', '', 'disabled', ?, ?, 'INBOX', 'keep', '', 0, 0, 0, 0)")
BLOB = b"%PDF-1.4 benchmark attachment\n" * 100


def vocabulary() -> list[str]:
    words: set[str] = set()
    for path in sorted(CORPUS.glob("*.box")):
        text = path.read_bytes()[:200_000].decode("latin-1")
        words.update(w.lower() for w in re.findall(r"\b[A-Za-z]{3,12}\b", text))
    return sorted(words)


class History:
    """The generated tickets, articles and attachments, in chunks of about CHUNK_ARTICLES articles."""

    def __init__(self, tickets: int | None, articles: int | None, accounts: list[int]) -> None:
        self.rng = rng = random.Random(4)
        self.words = words = vocabulary()
        # Zipf-like: a few common words, a long tail. Cumulative once: choices() would sum them on every call.
        self.weights = list(itertools.accumulate(1.0 / (i + 1) for i in range(len(words))))
        rng.shuffle(words)
        self.tickets, self.articles, self.accounts = tickets, articles, accounts
        expected = tickets if tickets is not None else articles // 3
        self.order_ticket = rng.randrange(expected // 2, expected if tickets is not None else expected * 9 // 10)
        # a word of 6+ letters near rank 300 of the Zipf draw: in a few percent of articles
        self.common = next(w for w in words[300:] if len(w) >= 6)
        self.ticket_total = self.article_total = 0

    def chunks(self):
        rng, words, weights = self.rng, self.words, self.weights
        now = datetime(2026, 11, 1)
        statuses = ["open"] * 2 + ["pending"] + ["closed"] * 7
        article_id = 0
        ticket_rows, article_rows, attachment_rows = [], [], []
        t = 0
        while (self.tickets is None or t < self.tickets) and (self.articles is None or article_id < self.articles):
            t += 1
            created = now - timedelta(seconds=rng.randrange(0, 730 * 86400))
            n_articles = rng.choice((1, 2, 3, 3, 4, 5))
            if self.articles is not None:
                n_articles = min(n_articles, self.articles - article_id)
            updated = created + timedelta(seconds=rng.randrange(0, 30 * 86400))
            customer = f"customer{rng.randrange(30_000)}@example{rng.randrange(500)}.net"
            subject = " ".join(rng.choices(words, cum_weights=weights, k=rng.randrange(3, 9))).capitalize()
            account_id = self.accounts[t % MAILBOXES]
            ticket_rows.append((t, 10000 + t, account_id, subject, rng.choice(statuses), customer,
                                customer.split("@")[0].title(), created, updated, n_articles))
            for a in range(n_articles):
                article_id += 1
                body = " ".join(rng.choices(words, cum_weights=weights, k=rng.randrange(60, 300)))
                if t == self.order_ticket and a == 0:
                    body += " Your order ORD-7741-2208 has shipped."
                direction = "in" if a % 2 == 0 else "out"
                article_rows.append((article_id, t, account_id, direction, f"<a{article_id}@bench.test>", "", "",
                                     customer if direction == "in" else f"mailbox{t % MAILBOXES:02d}@bench.test",
                                     "", "", "", ("Re: " if a else "") + subject,
                                     created + timedelta(hours=a), body, None, None, len(body), False, False, "",
                                     None, None, created + timedelta(hours=a)))
                if rng.random() < 0.1:
                    attachment_rows.append((article_id, "0" * 64, "invoice.pdf", "application/pdf", len(BLOB), None,
                                            False))
            self.ticket_total, self.article_total = t, article_id
            if len(article_rows) >= CHUNK_ARTICLES:
                yield ticket_rows, article_rows, attachment_rows
                ticket_rows, article_rows, attachment_rows = [], [], []
        if ticket_rows:
            yield ticket_rows, article_rows, attachment_rows


def fill(env: BenchEnv, tickets: int | None, articles: int | None, log=print) -> dict:
    if env.postgres is not None:
        return _fill_postgresql(env, tickets, articles, log)
    return _fill_sqlite(env.db_path, tickets, articles, env.agent_email)


def _fill_sqlite(db_path: Path, tickets: int | None, articles: int | None, agent_email: str) -> dict:
    con = sqlite3.connect(db_path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-1000000")  # 1 GB: the FTS index pages stay in memory between chunks
    con.execute("BEGIN")
    now = datetime(2026, 11, 1)
    agent_id = con.execute("SELECT id FROM users WHERE email = ?", (agent_email,)).fetchone()[0]
    accounts = []
    for i in range(MAILBOXES):
        cur = con.execute(ACCOUNT_INSERT, (f"mailbox{i:02d}@bench.test", f"Mailbox {i}", now, now))
        accounts.append(cur.lastrowid)
        if i < VISIBLE:
            con.execute("INSERT INTO account_members (account_id, user_id) VALUES (?, ?)", (cur.lastrowid, agent_id))
    con.execute("INSERT INTO blobs (sha256, size, data) VALUES (?, ?, ?)", ("0" * 64, len(BLOB), BLOB))
    history = History(tickets, articles, accounts)
    for ticket_rows, article_rows, attachment_rows in history.chunks():
        con.executemany(f"INSERT INTO tickets ({', '.join(TICKET_COLUMNS)}) VALUES ({','.join('?' * 10)})",
                        ticket_rows)
        con.executemany(f"INSERT INTO articles ({', '.join(_quoted(ARTICLE_COLUMNS))}) "
                        f"VALUES ({','.join('?' * len(ARTICLE_COLUMNS))})", article_rows)
        con.executemany(f"INSERT INTO attachments ({', '.join(ATTACHMENT_COLUMNS)}) VALUES ({','.join('?' * 7)})",
                        attachment_rows)
        con.execute("COMMIT")
        con.execute("BEGIN")
    con.execute("COMMIT")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    common_count = con.execute("SELECT count(*) FROM articles WHERE instr(lower(body_text), ?) > 0",
                               (history.common,)).fetchone()[0]
    con.close()
    return {"tickets": history.ticket_total, "articles": history.article_total, "order_ticket": history.order_ticket,
            "common_word": history.common, "common_articles": common_count,
            "db_mb": round(db_path.stat().st_size / 1e6)}


def _quoted(columns) -> list[str]:
    return [f'"{c}"' if c == "references" else c for c in columns]


def _copy_chunks(url: str, history: History, progress) -> None:
    """COPY the chunks over COPY_CONNECTIONS connections at once, each chunk committed.

    The server computes each article's generated `search_vector` (about 0.75 ms of its CPU for an
    article of 1.1 KB: the regular expression, unaccent and to_tsvector), which one connection does on
    one core; chunks are independent (each holds its tickets' articles), so they load side by side."""
    import psycopg

    local = threading.local()
    connections: list = []
    lock = threading.Lock()

    def load(chunk) -> None:
        con = getattr(local, "con", None)
        if con is None:
            con = local.con = psycopg.connect(url)
            with lock:
                connections.append(con)
        with con.cursor() as cur:
            for table, columns, rows in zip(("tickets", "articles", "attachments"),
                                            (TICKET_COLUMNS, ARTICLE_COLUMNS, ATTACHMENT_COLUMNS), chunk):
                with cur.copy(f"COPY {table} ({', '.join(_quoted(columns))}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
        con.commit()

    in_flight = threading.BoundedSemaphore(COPY_CONNECTIONS * 2)  # generated chunks waiting: bounded memory
    try:
        with ThreadPoolExecutor(COPY_CONNECTIONS) as pool:
            futures = []
            for number, chunk in enumerate(history.chunks(), 1):
                in_flight.acquire()
                future = pool.submit(load, chunk)
                future.add_done_callback(lambda _f: in_flight.release())
                futures.append(future)
                if number % 10 == 0:
                    progress()
            for future in futures:
                future.result()
    finally:
        for con in connections:
            con.close()


def _fill_postgresql(env: BenchEnv, tickets: int | None, articles: int | None, log=print) -> dict:
    import psycopg

    now = datetime(2026, 11, 1)
    with psycopg.connect(env.postgres.libpq_url) as con:
        agent_id = con.execute("SELECT id FROM users WHERE email = %s", (env.agent_email,)).fetchone()[0]
        accounts = []
        for i in range(MAILBOXES):
            accounts.append(con.execute(ACCOUNT_INSERT.replace("?", "%s") + " RETURNING id",
                                        (f"mailbox{i:02d}@bench.test", f"Mailbox {i}", now, now)).fetchone()[0])
            if i < VISIBLE:
                con.execute("INSERT INTO account_members (account_id, user_id) VALUES (%s, %s)", (accounts[-1], agent_id))
        con.execute("INSERT INTO blobs (sha256, size, data) VALUES (%s, %s, %s)", ("0" * 64, len(BLOB), BLOB))
        # The secondary indexes go for the load and come back from their own definitions after it.
        indexes = con.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = current_schema() "
            "AND i.tablename IN ('tickets', 'articles', 'attachments') "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)").fetchall()
        for name, _ in indexes:
            con.execute(f'DROP INDEX "{name}"')
        con.commit()
        history = History(tickets, articles, accounts)
        started = time.perf_counter()
        _copy_chunks(env.postgres.libpq_url, history, lambda: log(
            f"pages: {history.article_total:,} articles generated ({time.perf_counter() - started:.0f} s)"))
        log(f"pages: {history.article_total:,} articles copied in {time.perf_counter() - started:.0f} s")
        t0 = time.perf_counter()
        con.execute("SET maintenance_work_mem = '1GB'")
        for _, definition in indexes:
            con.execute(definition)
        con.commit()
        log(f"pages: {len(indexes)} indexes recreated in {time.perf_counter() - t0:.0f} s")
        for table, column in (("tickets", "id"), ("articles", "id"), ("attachments", "id")):
            con.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                        f"(SELECT coalesce(max({column}), 1) FROM {table}))")
        con.execute("SELECT setval('ticket_numbers', (SELECT max(number) FROM tickets))")
        con.commit()
        con.autocommit = True
        t0 = time.perf_counter()
        con.execute("VACUUM ANALYZE tickets, articles, attachments, accounts, account_members")
        log(f"pages: VACUUM ANALYZE in {time.perf_counter() - t0:.0f} s")
        common_count = con.execute("SELECT count(*) FROM articles WHERE strpos(lower(body_text), %s) > 0",
                                   (history.common,)).fetchone()[0]
        db_bytes = con.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    return {"tickets": history.ticket_total, "articles": history.article_total, "order_ticket": history.order_ticket,
            "common_word": history.common, "common_articles": common_count, "db_mb": round(db_bytes / 1e6),
            "indexes_rebuilt": sorted(name for name, _ in indexes)}


def run(workdir: Path, size: str = "full", log=print, database: str = "sqlite") -> dict:
    n_tickets, n_articles, reps = SIZES[(size, database)]
    with BenchEnv(workdir, dovecot=False, database=database) as env:
        t0 = time.perf_counter()
        data = fill(env, n_tickets, n_articles, log)
        data["fill_seconds"] = round(time.perf_counter() - t0)
        log(f"pages: filled {data['tickets']} tickets, {data['articles']} articles in {time.perf_counter() - t0:.0f} s "
            f"({data['db_mb']} MB); common word {data['common_word']!r} in {data['common_articles']} articles")
        client = env.app.test_client()
        headers = {"Authorization": f"Bearer {env.api_token}"}
        rng = random.Random(7)
        visible = [t for t in range(1, data["tickets"] + 1) if (t % MAILBOXES) < VISIBLE]
        requests_ = {
            "reference (accounts)": lambda: "/api/v1/accounts",
            "list, first page": lambda: "/api/v1/tickets",
            "search, order number": lambda: "/api/v1/tickets?q=ORD-7741-2208",
            "search, common word": lambda: f"/api/v1/tickets?q={data['common_word']}",
            "filter, status + mailbox": lambda: "/api/v1/tickets?status=open&account=mailbox03@bench.test",
            "ticket view": lambda: f"/api/v1/tickets/{rng.choice(visible)}",
        }
        checks = {}
        for name, path in requests_.items():  # once each, untimed: warm caches, check answers
            response = client.get(path(), headers=headers)
            assert response.status_code == 200, (name, response.status_code, response.get_data(as_text=True)[:300])
            checks[name] = response.get_json()
        assert [t["number"] for t in checks["search, order number"]["items"]] == [10000 + data["order_ticket"]] \
            or data["order_ticket"] % MAILBOXES >= VISIBLE, checks["search, order number"]
        timings: dict[str, list[float]] = {name: [] for name in requests_}
        for _ in range(reps):
            for name, path in requests_.items():
                url = path()
                t0 = time.perf_counter()
                response = client.get(url, headers=headers)
                timings[name].append(time.perf_counter() - t0)
                assert response.status_code == 200
    ref = percentile(timings["reference (accounts)"], 50)
    figures = {name: {"p50_ms": round(percentile(v, 50) * 1000, 1), "p95_ms": round(percentile(v, 95) * 1000, 1),
                      "ratio_p50": round(percentile(v, 50) / ref, 1)} for name, v in timings.items()}
    return {**data, "repetitions": reps, "figures": figures,
            "list_items": len(checks["list, first page"]["items"]),
            "common_items": len(checks["search, common word"]["items"]),
            "database": database, "postgresql": env.database_settings}


def report(r: dict) -> list[str]:
    where = f"PostgreSQL database {r['db_mb']} MB" if r.get("postgresql") else f"SQLite file {r['db_mb']} MB"
    lines = [*([f"- Database: {describe(r['postgresql'])}; filled by COPY in {r['fill_seconds']} s (indexes "
                "recreated after it, then VACUUM ANALYZE; not timed)."] if r.get("postgresql") else []),
             f"- {r['tickets']:,} tickets, {r['articles']:,} articles in 20 mailboxes, {where}; "
             f"agent member of 15 mailboxes; {r['repetitions']} repetitions of each request, server time "
             "(Flask app in process, no network).",
             "", "| request | p50 ms | p95 ms | p50 / reference | target p95 < 50 ms |", "| --- | ---: | ---: | ---: | --- |"]
    for name, f in r["figures"].items():
        target = "" if name.startswith("reference") else ("met" if f["p95_ms"] < 50 else "**missed**")
        lines.append(f"| {name} | {f['p50_ms']} | {f['p95_ms']} | {f['ratio_p50']} | {target} |")
    lines.append("")
    lines.append(f"The common word was {r['common_word']!r} (in {r['common_articles']:,} articles as a substring; `q` "
                 f"matches article text by words and word prefixes); the order number is in one article.")
    return lines
