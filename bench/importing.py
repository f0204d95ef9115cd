"""Benchmark 1: import throughput of one big mailbox, against a plain imapclient fetch of it.

The mailbox is N real-world mails: the corpus in `../shared/corpus/zammad-mail/` (108 mails, mean
43.8 KB) cycled in name order, so 10,000 mails come to about 438 MB with the corpus's own mix of
sizes. Each copy gets a unique Message-ID (the original header is replaced); everything else is
byte for byte the corpus mail, so copies of a reply still thread onto the ticket of their
original. The mails are written as Maildir files into the Dovecot user's `cur/` and Dovecot indexes
them on the first access (done before any timing).

Reference: the same messages fetched with IMAPClient over the same implicit-TLS port with the same
XOAUTH2 login, in batches of the connector's `fetch_batch_size`, bodies discarded (imaplib's debug
formatting off, as the connector has it: the stricter reference). Best of the runs before and after
the import.

Import: `connector sync --account ADDRESS --once` in its own process: log in, fetch, parse, store raw
and parsed mail, thread, commit per batch. Its wall time includes interpreter start and the login; a
second `sync --once` with nothing new measures that fixed part, which is reported and subtracted for
the net rate. Peak RSS is the child's own `ru_maxrss` from wait4().
"""
from __future__ import annotations

import re
import time
from pathlib import Path

from .env import BenchEnv, percentile, run_measured  # noqa: F401

SIZES = {"tiny": 60, "full": 10_000}
CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "zammad-mail"
MSGID_RE = re.compile(rb"^Message-ID:[^\n]*\n(?:[ \t][^\n]*\n)*", re.I | re.M)


def corpus() -> list[tuple[str, bytes]]:
    mails = [(p.stem, p.read_bytes()) for p in sorted(CORPUS.glob("*.box"))]
    if not mails:
        raise SystemExit(f"the mail corpus is not at {CORPUS}")
    return mails


def with_message_id(raw: bytes, message_id: str) -> bytes:
    """Replace the (first) Message-ID header in the header block, or add one."""
    ends = [i for i in (raw.find(b"\n\n"), raw.find(b"\n\r\n")) if i >= 0]
    end = min(ends) if ends else -1
    head, body = (raw, b"") if end < 0 else (raw[:end + 1], raw[end + 1:])
    line = f"Message-ID: {message_id}\n".encode()
    head, n = MSGID_RE.subn(lambda _m: b"", head)
    if head.startswith(b"From ") and b"\n" in head:  # mbox "From " line: keep it out of the headers
        head = head.split(b"\n", 1)[1]
    return line + head + body


def write_mailbox(env: BenchEnv, address: str, count: int) -> tuple[int, int]:
    """Write `count` mails into the mailbox's Maildir/cur; returns (count, bytes)."""
    mails = corpus()
    cur = env.maildir(address) / "cur"
    total = 0
    base = int(time.time()) - count
    for i in range(count):
        name, raw = mails[i % len(mails)]
        data = with_message_id(raw, f"<bench-{i:06d}-{name}@bench.connector.test>")
        (cur / f"{base + i}.M{i}P1.bench,S={len(data)}:2,").write_bytes(data)
        total += len(data)
    env.chown_mail(address)
    return count, total


def raw_fetch(env: BenchEnv, account_id: int, address: str, batch_size: int) -> dict:
    """Plain IMAPClient: connect (TLS), XOAUTH2, SELECT, UID SEARCH, FETCH in batches. Bodies discarded."""
    import imapclient

    from connector.mail.imap import tls_context

    token = env.access_token(account_id)
    started = time.perf_counter()
    client = imapclient.IMAPClient("127.0.0.1", port=env.dovecot.imap_port, ssl=True,
                                   ssl_context=tls_context(str(env.ca.ca_path)), timeout=120)
    client._imap.debug = 0
    client.oauth2_login(address, token)
    client.select_folder("INBOX", readonly=True)
    uids = sorted(client.search(["ALL"]))
    count = size = 0
    for start in range(0, len(uids), batch_size):
        response = client.fetch(uids[start:start + batch_size], [b"RFC822.SIZE", b"BODY.PEEK[]"])
        for data in response.values():
            body = data.get(b"BODY[]")
            if body is not None:
                count += 1
                size += len(body)
    seconds = time.perf_counter() - started
    client.logout()
    return {"seconds": seconds, "messages": count, "bytes": size}


def run(workdir: Path, size: str = "full", log=print) -> dict:
    n = SIZES[size]
    with BenchEnv(workdir) as env:
        address = env.add_user("big")
        account_id = env.connect(address)
        t0 = time.perf_counter()
        count, total = write_mailbox(env, address, n)
        log(f"import: wrote {count} mails, {total / 1e6:.1f} MB into Maildir in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        status = env.dovecot.status(address)  # Dovecot indexes the new files here, outside any timing
        log(f"import: Dovecot indexed {status['messages']} mails in {time.perf_counter() - t0:.1f} s")
        batch = env.rt.settings.mail.fetch_batch_size
        warm = raw_fetch(env, account_id, address, batch)  # page cache and Dovecot cache warm-up
        log(f"import: raw fetch warm-up {warm['seconds']:.2f} s")
        before = raw_fetch(env, account_id, address, batch)
        log(f"import: raw fetch {before['seconds']:.2f} s ({before['messages']} mails, {before['bytes'] / 1e6:.1f} MB)")
        cmd = [__import__("sys").executable, "-m", "connector.cli", "sync", "--account", address, "--once"]
        imported = run_measured(cmd, env.env(), workdir / "import.log")
        log(f"import: connector sync --once {imported.seconds:.2f} s, exit {imported.returncode}, "
            f"peak RSS {imported.maxrss_mb:.0f} MB (with the parser pool {imported.tree_peak_mb:.0f} MB), "
            f"CPU {imported.cpu_seconds:.1f} s (with the pool {imported.tree_cpu_seconds:.1f} s)")
        fixed = run_measured(cmd, env.env(), workdir / "import-noop.log")
        log(f"import: the same with nothing new (start-up + login) {fixed.seconds:.2f} s")
        after = raw_fetch(env, account_id, address, batch)
        log(f"import: raw fetch again {after['seconds']:.2f} s")
        from sqlalchemy import func, select

        from connector.models import Article, ImportFailure, Ticket

        with env.rt.db.session() as session:
            articles = session.scalar(select(func.count()).select_from(Article))
            tickets = session.scalar(select(func.count()).select_from(Ticket))
            failures = session.scalar(select(func.count()).select_from(ImportFailure))
        log_text = (workdir / "import.log").read_text(errors="replace")
        summary = re.search(r"\d+ imported, \d+ already known, \d+ ignored, \d+ quarantined, \d+ to retry", log_text)
        raw = min(before["seconds"], after["seconds"])
        net = max(0.001, imported.seconds - fixed.seconds)
        mb = before["bytes"] / 1e6
        return {
            "messages": count, "mb": round(mb, 1), "batch_size": batch,
            "raw_seconds": round(raw, 2), "raw_runs": [round(before["seconds"], 2), round(after["seconds"], 2)],
            "raw_msgs_per_s": round(count / raw), "raw_mb_per_s": round(mb / raw, 1),
            "import_seconds": round(imported.seconds, 2), "startup_seconds": round(fixed.seconds, 2),
            "import_net_seconds": round(net, 2),
            "import_msgs_per_s": round(count / net), "import_mb_per_s": round(mb / net, 1),
            "import_msgs_per_s_gross": round(count / imported.seconds),
            "ratio": round(raw / net, 3), "ratio_gross": round(raw / imported.seconds, 3),
            "peak_rss_mb": round(max(imported.maxrss_mb, imported.tree_peak_mb)),  # the larger of the two
            "main_peak_rss_mb": round(imported.maxrss_mb), "tree_peak_rss_mb": round(imported.tree_peak_mb),
            "import_cpu_seconds": round(imported.cpu_seconds, 1), "tree_cpu_seconds": round(imported.tree_cpu_seconds, 1),
            "exit_code": imported.returncode, "articles": articles, "tickets": tickets, "failures": failures,
            "summary": summary.group(0) if summary else "(no summary line)",
        }


def report(r: dict) -> list[str]:
    ok_ratio = r["ratio"] >= 0.4
    ok_rss = r["peak_rss_mb"] < 300
    return [
        f"- Mailbox: {r['messages']:,} mails, {r['mb']} MB (corpus cycled, unique Message-IDs); "
        f"fetch batch {r['batch_size']}.",
        f"- Reference, plain IMAPClient fetch over TLS: {r['raw_seconds']} s (runs {r['raw_runs']}), "
        f"{r['raw_msgs_per_s']:,} mails/s, {r['raw_mb_per_s']} MB/s.",
        f"- connector import (`connector sync --once`, fetch + parse + store + thread): {r['import_seconds']} s "
        f"wall, of which {r['startup_seconds']} s start-up and login (a second run with nothing new); "
        f"net {r['import_net_seconds']} s = {r['import_msgs_per_s']:,} mails/s, {r['import_mb_per_s']} MB/s "
        f"(gross {r['import_msgs_per_s_gross']:,} mails/s). CPU {r['tree_cpu_seconds']} s in all (main process "
        f"{r['import_cpu_seconds']} s, the rest in the parser pool).",
        f"- **Ratio import/raw: {r['ratio']}** (gross {r['ratio_gross']}); target >= 0.4: "
        f"**{'met' if ok_ratio else 'missed'}**.",
        f"- **Peak RSS of the import: {r['peak_rss_mb']} MB** (main process {r['main_peak_rss_mb']} MB by wait4; "
        f"with its parser processes {r['tree_peak_rss_mb']} MB, the sum of their PSS sampled every 20 ms); target < 300 MB: "
        f"**{'met' if ok_rss else 'missed'}**.",
        f"- Result: {r['summary']}; {r['tickets']:,} tickets, {r['articles']:,} articles, "
        f"{r['failures']} import failures, exit code {r['exit_code']}.",
    ]
