"""Benchmark 2: new-mail latency, from the SMTP server's acceptance to the ticket in the REST API.

`connector serve` (web app with its embedded worker, the default single-process setup, IDLE on)
watches one mailbox. A customer (a test IdP user) submits N mails one by one over SMTP (STARTTLS,
AUTH XOAUTH2) to the test submission server, which delivers each into Dovecot over LMTP before it
answers 250; that answer is the start time. Between submissions the harness waits a random
0.1-1.5 s (seeded). A poller lists `GET /api/v1/tickets` every 20 ms and records when each mail's
subject first appears: that is the end time.

Reference, in the same run: each mail also goes (same SMTP transaction) to a second mailbox, where a
plain IMAPClient connection in IDLE records when Dovecot announces it (EXISTS): the floor any IMAP
client could reach here (Dovecot waits 0.5 s after a change before it notifies). It watches its own
mailbox because two IDLE sessions on one mailbox in one Dovecot process delay one of them to the
periodic check (5 s here), which would slow the connector down, not measure it.
"""
from __future__ import annotations

import random
import time
import uuid
from pathlib import Path

from .database import describe
from .env import BenchEnv, percentile
from .probe import ApiWatcher, IdleWatcher, Server, Submitter

SIZES = {"tiny": 5, "full": 200}


def run(workdir: Path, size: str = "full", log=print, database: str = "sqlite") -> dict:
    from tests.servers.smtp import SmtpServer
    from tests.support.mail import make_mail

    n = SIZES[size]
    rng = random.Random(5)
    with BenchEnv(workdir, database=database) as env:
        smtp = SmtpServer(env.ca, f"{env.idp_url}/introspect", deliver=env.dovecot.deliver)
        smtp.start()
        server = watcher = idle = submitter = None
        try:
            address = env.add_user("support")
            customer = env.add_user("customer")
            reference = env.add_user("reference")  # gets a copy of each mail; not connected to connector
            env.connect(address)
            token = env.user_token(customer)
            server = Server(env, workdir / "serve.log")
            deadline = time.monotonic() + 60
            while not server.get("/api/v1/accounts")[0].get("last_sync_at"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the worker did not sync the mailbox within 60 s")
                time.sleep(0.1)
            time.sleep(1.0)  # the worker is in IDLE now
            # Not on the watched mailbox itself: two IDLE sessions on one mailbox in one Dovecot process
            # delay one of them to Dovecot's periodic check (mailbox_idle_check_interval).
            idle = IdleWatcher(env, reference, env.user_token(reference))
            idle.start()
            watcher = ApiWatcher(server)
            watcher.start()
            submitter = Submitter("127.0.0.1", smtp.port, customer, token, env.ca.ca_path)
            run_id = uuid.uuid4().hex[:8]
            accepted: dict[str, float] = {}
            order: list[str] = []
            for i in range(n):
                subject = f"Latency probe {i:03d} {run_id}"
                watcher.expect(subject)
                raw = make_mail(to=address, sender=customer, subject=subject, body=f"Probe {i}\n")
                accepted[subject] = submitter.send([address, reference], raw)
                order.append(subject)
                time.sleep(rng.uniform(0.1, 1.5))
            complete = watcher.wait_all(order, timeout=60)
            latencies = [watcher.seen[s] - accepted[s] for s in order if s in watcher.seen]
            reference = [idle.at[idle.start_count + i + 1] - accepted[s] for i, s in enumerate(order)
                         if idle.start_count + i + 1 in idle.at]
            rss = _rss(server.proc.pid)
        finally:
            for part in (submitter, watcher, idle, server):
                if part is not None:
                    part.close() if isinstance(part, Submitter) else part.stop()
            smtp.stop()
    p = {q: percentile(latencies, q) for q in (50, 95)}
    r = {q: percentile(reference, q) for q in (50, 95)}
    return {
        "mails": n, "seen": len(latencies), "complete": complete,
        "p50_s": round(p[50], 3), "p95_s": round(p[95], 3), "max_s": round(max(latencies), 3),
        "mean_s": round(sum(latencies) / len(latencies), 3),
        "ref_p50_s": round(r[50], 3), "ref_p95_s": round(r[95], 3), "ref_max_s": round(max(reference), 3),
        "ref_seen": len(reference),
        "ratio_p95": round(p[95] / r[95], 1) if r[95] > 0 else None,
        "overhead_p95_s": round(p[95] - r[95], 3),
        "api_polls": watcher.polls, "api_errors": watcher.errors, "serve_rss_mb": round(rss),
        "latencies_s": sorted(round(x, 3) for x in latencies),
        "database": database, "postgresql": env.database_settings,
    }


def _rss(pid: int) -> float:
    from .env import rss_mb
    try:
        return rss_mb(pid)
    except OSError:
        return float("nan")


def report(r: dict) -> list[str]:
    ok = r["p95_s"] < 2.0
    return [
        *([f"- Database: {describe(r['postgresql'])}."] if r.get("postgresql") else []),
        f"- {r['mails']} mails submitted one by one over SMTP (random 0.1-1.5 s apart) to one mailbox watched by "
        f"`connector serve` (embedded worker, IDLE); {r['seen']} seen through `GET /api/v1/tickets`.",
        f"- **Latency, SMTP acceptance -> ticket in the REST API: p50 {r['p50_s']} s, p95 {r['p95_s']} s, "
        f"max {r['max_s']} s** (mean {r['mean_s']} s). Target p95 < 2 s: **{'met' if ok else 'missed'}**.",
        f"- Reference, a plain IMAPClient in IDLE on a mailbox that gets a copy of each mail (Dovecot's push): p50 {r['ref_p50_s']} s, "
        f"p95 {r['ref_p95_s']} s, max {r['ref_max_s']} s; connector p95 = {r['ratio_p95']}x the reference "
        f"(+{r['overhead_p95_s']} s: fetch, parse, store, commit, and the 20 ms API poll).",
        f"- The API was polled {r['api_polls']} times ({r['api_errors']} errors); `connector serve` RSS at the end "
        f"{r['serve_rss_mb']} MB.",
    ]
