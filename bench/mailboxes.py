"""Benchmark 3: many mailboxes on one `connector worker`.

N test users at the identity provider (also Dovecot users), each connected through the real
authorization-code flow (the app's /accounts/connect/microsoft, the IdP's sign-in page driven over
HTTPS, the app's callback), each with one mail waiting. Then one `connector worker` process (default
settings: IDLE, 120 s leases) and, for the REST API, `connector serve --no-worker`.

- First sync: from the worker's start until every mailbox has synced and its mail is a ticket.
- Steady state (M minutes): every minute 1% of the mailboxes (at least one) get a mail, delivered
  over LMTP at random moments; latency is from Dovecot's acceptance to the ticket being listed by
  `GET /api/v1/tickets` (polled every 50 ms). Worker RSS and CPU are sampled from /proc every 5 s;
  the CPU share is CPU seconds per wall second over the steady state (1.0 = one core).
- Token endpoint calls: the IdP counts them (by grant type) from the worker's start; reported per
  mailbox per hour of steady state, against the access-token lifetime (3600 s here).

References, in the same run: each steady-state mail is also delivered (next LMTP transaction) to a
reference mailbox watched by a plain IMAPClient in IDLE (Dovecot's own push latency); and after the
steady state, a plain IMAPClient does what a first sync does on the network (TLS, XOAUTH2, SELECT,
UID SEARCH, FETCH, LOGOUT) for a sample of the mailboxes one after another, which times the
unavoidable per-mailbox cost.
"""
from __future__ import annotations

import random
import smtplib
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

from .env import ROOT, BenchEnv, cpu_seconds, percentile, rss_mb
from .probe import ApiWatcher, IdleWatcher, Server

SIZES = {  # mailboxes, steady-state minutes, mails per minute
    "tiny": (4, 0.25, 16),
    "full": (1000, 10, 10),
}


def _mail(to: str, subject: str) -> bytes:
    from tests.support.mail import make_mail
    return make_mail(to=to, sender="customer@example.net", subject=subject, body="Steady state probe\n")


def run(workdir: Path, size: str = "full", log=print) -> dict:
    n, minutes, per_minute = SIZES[size]
    rng = random.Random(3)
    with BenchEnv(workdir) as env:
        t0 = time.perf_counter()
        emails = [env.add_user(f"box{i:04d}") for i in range(n)]
        reference = env.add_user("reference")
        ids = env.connect_many(emails, threads=4)
        connect_seconds = time.perf_counter() - t0
        log(f"mailboxes: connected {n} mailboxes through the auth-code flow in {connect_seconds:.0f} s")
        for i, email in enumerate(emails):  # one waiting mail each, as Maildir files
            raw = _mail(email, f"Waiting mail {i}")
            cur = env.maildir(email) / "cur"
            (cur / f"{int(time.time())}.M{i}P1.bench,S={len(raw)}:2,").write_bytes(raw)
            env.chown_mail(email)
        env.idp("reset_stats")
        worker_log = open(workdir / "worker.log", "ab")
        worker = subprocess.Popen([sys.executable, "-m", "connector.cli", "worker"], env=env.env(), cwd=ROOT,
                                  stdout=worker_log, stderr=subprocess.STDOUT)
        server = watcher = idle = None
        try:
            started = time.perf_counter()
            db = sqlite3.connect(f"file:{env.db_path}?mode=ro", uri=True, timeout=30)
            deadline = time.monotonic() + max(300, n * 1.0)
            while True:
                synced = db.execute("SELECT count(*) FROM accounts WHERE last_sync_at IS NOT NULL").fetchone()[0]
                tickets = db.execute("SELECT count(*) FROM tickets").fetchone()[0]
                if synced >= n and tickets >= n:
                    break
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"first sync incomplete: {synced}/{n} synced, {tickets} tickets; "
                                       f"see {workdir / 'worker.log'}")
                time.sleep(0.2)
            first_sync = time.perf_counter() - started
            errors = db.execute("SELECT count(*) FROM accounts WHERE status != 'connected'").fetchone()[0]
            log(f"mailboxes: first sync of {n} mailboxes in {first_sync:.1f} s ({errors} not connected)")
            stats_first = env.idp_stats()
            server = Server(env, workdir / "serve.log", worker=False)
            idle = IdleWatcher(env, reference, env.user_token(reference))
            idle.start()
            watcher = ApiWatcher(server, interval=0.05)
            watcher.start()
            time.sleep(5)  # the worker's threads are in IDLE now
            samples = []
            cpu0, wall0 = cpu_seconds(worker.pid), time.perf_counter()
            stats0 = env.idp_stats()
            total = max(1, round(minutes * per_minute))
            due = sorted(rng.uniform(0, minutes * 60) for _ in range(total))
            accepted: dict[str, float] = {}
            ref_accepted: dict[str, float] = {}
            order: list[str] = []
            run_id = uuid.uuid4().hex[:6]
            next_sample = 0.0
            lmtp = smtplib.LMTP("127.0.0.1", env.dovecot.lmtp_port, timeout=30)
            for k, at in enumerate(due + [minutes * 60]):
                while time.perf_counter() - wall0 < at:
                    if time.perf_counter() - wall0 >= next_sample:
                        samples.append((time.perf_counter() - wall0, rss_mb(worker.pid), cpu_seconds(worker.pid)))
                        next_sample += 5
                    time.sleep(0.01)
                if k == len(due):
                    break
                to = emails[rng.randrange(n)]
                subject = f"Steady {k:04d} {run_id}"
                watcher.expect(subject)
                raw = _mail(to, subject)
                lmtp.sendmail("customer@example.net", [to], raw)
                accepted[subject] = time.perf_counter()
                lmtp.sendmail("customer@example.net", [reference], raw)  # smtplib's LMTP takes one RCPT
                ref_accepted[subject] = time.perf_counter()
                order.append(subject)
            lmtp.quit()
            cpu1, wall1 = cpu_seconds(worker.pid), time.perf_counter()
            stats1 = env.idp_stats()
            watcher.wait_all(order, timeout=60)
            latencies = [watcher.seen[s] - accepted[s] for s in order if s in watcher.seen]
            ref = [idle.at[idle.start_count + i + 1] - ref_accepted[s] for i, s in enumerate(order)
                   if idle.start_count + i + 1 in idle.at]
            rss_end = rss_mb(worker.pid)
            errors_end = db.execute("SELECT count(*) FROM accounts WHERE status != 'connected'").fetchone()[0]
            threads = len(list(Path(f"/proc/{worker.pid}/task").iterdir()))
            db.close()
        finally:
            for part in (watcher, idle, server):
                if part is not None:
                    part.stop()
            worker.terminate()
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            worker_log.close()
        # Reference for the first sync: the network part of it, plainly, for a sample of the mailboxes.
        sample = ids[: min(n, 100)]
        tokens = [env.access_token(i) for i in sample]
        ref_seconds = _plain_first_pass(env, [emails[ids.index(i)] for i in sample], tokens)
        per_mailbox_ref = ref_seconds / len(sample)
    steady_seconds = wall1 - wall0
    token_steady = stats1["token_calls_total"] - stats0["token_calls_total"]
    lifetime = env.access_token_lifetime
    return {
        "mailboxes": n, "connect_seconds": round(connect_seconds, 1),
        "first_sync_seconds": round(first_sync, 1), "first_sync_per_mailbox_ms": round(first_sync / n * 1000, 1),
        "ref_first_pass_ms": round(per_mailbox_ref * 1000, 1),
        "first_sync_ratio": round(first_sync / (per_mailbox_ref * n), 2),
        "not_connected_after_first_sync": errors, "not_connected_at_end": errors_end,
        "steady_minutes": round(steady_seconds / 60, 1), "mails": len(order), "seen": len(latencies),
        "p50_s": round(percentile(latencies, 50), 3), "p95_s": round(percentile(latencies, 95), 3),
        "max_s": round(max(latencies), 3) if latencies else None,
        "ref_p50_s": round(percentile(ref, 50), 3), "ref_p95_s": round(percentile(ref, 95), 3),
        "ratio_p95": round(percentile(latencies, 95) / percentile(ref, 95), 1) if ref else None,
        "rss_max_mb": round(max(s[1] for s in samples)), "rss_end_mb": round(rss_end),
        "cpu_share": round((cpu1 - cpu0) / steady_seconds, 3), "threads": threads,
        "token_calls_first_sync": stats_first["token_calls_total"],
        "token_calls_first_sync_detail": stats_first["token_calls"],
        "token_calls_steady": token_steady,
        "token_calls_per_mailbox_hour": round(token_steady / n / (steady_seconds / 3600), 3),
        "token_allowance_per_mailbox_hour": round(3600 / lifetime, 2), "access_token_lifetime": lifetime,
        "api_polls": watcher.polls, "latencies_s": sorted(round(x, 3) for x in latencies),
    }


def _plain_first_pass(env: BenchEnv, emails: list[str], tokens: list[str]) -> float:
    import imapclient

    from connector.mail.imap import tls_context

    started = time.perf_counter()
    for email, token in zip(emails, tokens):
        client = imapclient.IMAPClient("127.0.0.1", port=env.dovecot.imap_port, ssl=True,
                                       ssl_context=tls_context(str(env.ca.ca_path)), timeout=60)
        client._imap.debug = 0
        client.oauth2_login(email, token)
        client.select_folder("INBOX")
        uids = client.search(["UID", "1:*"])
        client.fetch(uids, [b"RFC822.SIZE", b"BODY.PEEK[]"])
        client.logout()
    return time.perf_counter() - started


def report(r: dict) -> list[str]:
    ok_p95 = r["p95_s"] < 5
    ok_rss = r["rss_max_mb"] < 1024
    ok_tokens = r["token_calls_per_mailbox_hour"] <= r["token_allowance_per_mailbox_hour"]
    return [
        f"- {r['mailboxes']:,} mailboxes connected through the auth-code flow ({r['connect_seconds']} s), one "
        f"`connector worker` ({r['threads']} threads at the end).",
        f"- **First sync of all: {r['first_sync_seconds']} s** ({r['first_sync_per_mailbox_ms']} ms a mailbox); "
        f"reference, the same network steps by a plain IMAPClient one mailbox after another: "
        f"{r['ref_first_pass_ms']} ms a mailbox, so {r['first_sync_ratio']}x the reference for all of them. "
        f"{r['not_connected_after_first_sync']} mailboxes not `connected` after it, {r['not_connected_at_end']} at "
        "the end.",
        f"- Steady state, {r['steady_minutes']} min, {r['mails']} mails to random mailboxes (1% a minute): "
        f"**latency p50 {r['p50_s']} s, p95 {r['p95_s']} s, max {r['max_s']} s**; target p95 < 5 s: "
        f"**{'met' if ok_p95 else 'missed'}**. Reference (IDLE on a mailbox getting a copy): p50 {r['ref_p50_s']} s, "
        f"p95 {r['ref_p95_s']} s ({r['ratio_p95']}x).",
        f"- **Worker RSS: {r['rss_max_mb']} MB at most** (end {r['rss_end_mb']} MB); target < 1 GB: "
        f"**{'met' if ok_rss else 'missed'}**. **CPU share at steady state: {r['cpu_share']:.1%} of one core**.",
        f"- **Token endpoint calls: {r['token_calls_first_sync']} during the first sync, {r['token_calls_steady']} in "
        f"the steady state = {r['token_calls_per_mailbox_hour']} per mailbox per hour**; allowance one per access-"
        f"token lifetime ({r['access_token_lifetime']} s) = {r['token_allowance_per_mailbox_hour']} per mailbox per "
        f"hour: **{'met' if ok_tokens else 'missed'}**.",
    ]
