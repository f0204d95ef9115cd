"""Benchmark 4: agent pages over a large history.

The embedded SQLite database (migrated by the app, so with every index and search table of the
schema) is filled with N tickets and 3N articles in 20 mailboxes: 1 to 5 articles a ticket (mean
3), bodies of 60-300 words drawn from the words of the mail corpus, 10% of articles with an
attachment, statuses 20% open / 10% pending / 70% closed, activity spread over two years. Rows are
written with plain SQL in transactions of about 20,000 articles (the search-index triggers fire as
on ingest); that is the data set, not something timed.

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

import random
import re
import sqlite3
import time
from datetime import datetime, timedelta
from pathlib import Path

from .env import BenchEnv, percentile

SIZES = {"tiny": (1_000, 10), "full": (100_000, 200)}  # tickets, repetitions per request
MAILBOXES = 20
VISIBLE = 15
CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "zammad-mail"


def vocabulary() -> list[str]:
    words: set[str] = set()
    for path in sorted(CORPUS.glob("*.box")):
        text = path.read_bytes()[:200_000].decode("latin-1")
        words.update(w.lower() for w in re.findall(r"\b[A-Za-z]{3,12}\b", text))
    return sorted(words)


def fill(db_path: Path, tickets: int, agent_email: str, log=print) -> dict:
    rng = random.Random(4)
    words = vocabulary()
    weights = [1.0 / (i + 1) for i in range(len(words))]  # Zipf-like: a few common words, a long tail
    rng.shuffle(words)
    con = sqlite3.connect(db_path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-1000000")  # 1 GB: the FTS index pages stay in memory between chunks
    con.execute("BEGIN")
    now = datetime(2026, 11, 1)
    agent_id = con.execute("SELECT id FROM users WHERE email = ?", (agent_email,)).fetchone()[0]
    accounts = []
    for i in range(MAILBOXES):
        cur = con.execute(
            "INSERT INTO accounts (address, display_name, token_owner, tenant_id, home_account_id, status, "
            "connected_at, created_at, folder, post_import_action, move_to_folder, last_uid, sync_total, sync_done, "
            "failure_count) VALUES (?, ?, '', '', '', 'disabled', ?, ?, 'INBOX', 'keep', '', 0, 0, 0, 0)",
            (f"mailbox{i:02d}@bench.test", f"Mailbox {i}", now, now))
        accounts.append(cur.lastrowid)
        if i < VISIBLE:
            con.execute("INSERT INTO account_members (account_id, user_id) VALUES (?, ?)", (cur.lastrowid, agent_id))
    blob = b"%PDF-1.4 benchmark attachment\n" * 100
    con.execute("INSERT INTO blobs (sha256, size, data) VALUES (?, ?, ?)", ("0" * 64, len(blob), blob))
    statuses = ["open"] * 2 + ["pending"] + ["closed"] * 7
    order_ticket = rng.randrange(tickets // 2, tickets)
    article_id = 0
    ticket_rows, article_rows, attachment_rows = [], [], []
    # a word of 6+ letters near rank 300 of the Zipf draw: in a few percent of articles
    common = next(w for w in words[300:] if len(w) >= 6)
    for t in range(1, tickets + 1):
        created = now - timedelta(seconds=rng.randrange(0, 730 * 86400))
        n_articles = rng.choice((1, 2, 3, 3, 4, 5))
        updated = created + timedelta(seconds=rng.randrange(0, 30 * 86400))
        customer = f"customer{rng.randrange(30_000)}@example{rng.randrange(500)}.net"
        subject = " ".join(rng.choices(words, weights, k=rng.randrange(3, 9))).capitalize()
        account_id = accounts[t % MAILBOXES]
        ticket_rows.append((t, 10000 + t, account_id, subject, rng.choice(statuses), customer,
                            customer.split("@")[0].title(), created, updated, n_articles))
        for a in range(n_articles):
            article_id += 1
            body = " ".join(rng.choices(words, weights, k=rng.randrange(60, 300)))
            if t == order_ticket and a == 0:
                body += " Your order ORD-7741-2208 has shipped."
            direction = "in" if a % 2 == 0 else "out"
            article_rows.append((article_id, t, account_id, direction, f"<a{article_id}@bench.test>", "", "",
                                 customer if direction == "in" else f"mailbox{t % MAILBOXES:02d}@bench.test",
                                 "", "", "", ("Re: " if a else "") + subject,
                                 created + timedelta(hours=a), body, None, None, len(body), 0, 0, "", None, None,
                                 created + timedelta(hours=a)))
            if rng.random() < 0.1:
                attachment_rows.append((article_id, "0" * 64, "invoice.pdf", "application/pdf", len(blob), None, 0))
        if len(article_rows) >= 20_000 or t == tickets:
            con.executemany("INSERT INTO tickets (id, number, account_id, subject, status, customer_address, "
                            "customer_name, created_at, updated_at, article_count) VALUES (?,?,?,?,?,?,?,?,?,?)",
                            ticket_rows)
            con.executemany(
                "INSERT INTO articles (id, ticket_id, account_id, direction, message_id, in_reply_to, \"references\", "
                "from_addr, from_name, to_addrs, cc_addrs, subject, date, body_text, body_html, raw_sha256, size, "
                "is_auto, is_bounce, notes, imap_uid, author_id, created_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", article_rows)
            con.executemany("INSERT INTO attachments (article_id, blob_sha256, filename, content_type, size, "
                            "content_id, inline) VALUES (?,?,?,?,?,?,?)", attachment_rows)
            ticket_rows, article_rows, attachment_rows = [], [], []
            con.execute("COMMIT")
            con.execute("BEGIN")
    con.execute("COMMIT")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    common_count = con.execute("SELECT count(*) FROM articles WHERE instr(lower(body_text), ?) > 0",
                               (common,)).fetchone()[0]
    con.close()
    return {"tickets": tickets, "articles": article_id, "order_ticket": order_ticket, "common_word": common,
            "common_articles": common_count, "db_mb": round(db_path.stat().st_size / 1e6)}


def run(workdir: Path, size: str = "full", log=print) -> dict:
    n_tickets, reps = SIZES[size]
    with BenchEnv(workdir, dovecot=False) as env:
        t0 = time.perf_counter()
        data = fill(env.db_path, n_tickets, env.agent_email, log)
        log(f"pages: filled {data['tickets']} tickets, {data['articles']} articles in {time.perf_counter() - t0:.0f} s "
            f"({data['db_mb']} MB); common word {data['common_word']!r} in {data['common_articles']} articles")
        client = env.app.test_client()
        headers = {"Authorization": f"Bearer {env.api_token}"}
        rng = random.Random(7)
        visible = [t for t in range(1, n_tickets + 1) if (t % MAILBOXES) < VISIBLE]
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
            "common_items": len(checks["search, common word"]["items"])}


def report(r: dict) -> list[str]:
    lines = [f"- {r['tickets']:,} tickets, {r['articles']:,} articles in 20 mailboxes, SQLite file {r['db_mb']} MB; "
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
