"""Benchmark 3: many mailboxes on `connector worker` processes (one on SQLite, three on PostgreSQL).

N test users at the identity provider (also Dovecot users), each connected through the real
authorization-code flow (the app's /accounts/connect/microsoft, the IdP's sign-in page driven over
HTTPS, the app's callback), each with one mail waiting. Then W `connector worker` processes, started
together (default settings: IDLE, 120 s leases; with several, the leases spread the mailboxes among
them), and, for the REST API, `connector serve --no-worker`.

- First sync: from the workers' start until every mailbox has synced and its mail is a ticket.
- Steady state (M minutes): every minute 1% of the mailboxes (at least one) get a mail, delivered
  over LMTP at random moments; latency is from Dovecot's acceptance to the ticket being listed by
  `GET /api/v1/tickets` (polled every 50 ms). Each worker's RSS and CPU are sampled from /proc every
  5 s; the CPU share is CPU seconds per wall second over the steady state (1.0 = one core); its peak
  RSS (VmHWM) covers the first sync too. How many mailboxes each worker holds comes from the
  database: unexpired leases per `accounts.lease_owner`, and the `workers` table's own count.
- Token endpoint calls: the IdP counts them (by grant type) from the workers' start; reported per
  mailbox per hour of steady state, against the access-token lifetime (3600 s here).

References, in the same run: each steady-state mail is also delivered (next LMTP transaction) to a
reference mailbox watched by a plain IMAPClient in IDLE (Dovecot's own push latency); and after the
steady state, a plain IMAPClient does what a first sync does on the network (TLS, XOAUTH2, SELECT,
UID SEARCH, FETCH, LOGOUT) for a sample of the mailboxes one after another, which times the
unavoidable per-mailbox cost.

`--mailboxes N`, `--workers W` and `--minutes M` (python -m bench) run it at another size.
"""
from __future__ import annotations

import contextlib
import math
import random
import re
import smtplib
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from .database import describe
from .env import ROOT, BenchEnv, cpu_seconds, hwm_mb, percentile, rss_mb, tree_sample
from .probe import ApiWatcher, IdleWatcher, Server

SIZES = {  # (size, database) -> mailboxes, steady-state minutes, mails per minute (None: 1% of the mailboxes), workers
    ("tiny", "sqlite"): (4, 0.25, 16, 1),
    ("tiny", "postgresql"): (6, 0.25, 16, 3),
    ("full", "sqlite"): (1000, 10, None, 1),
    ("full", "postgresql"): (3000, 10, None, 3),
}
SESSIONS_PER_IMAP_PROCESS = 20  # tests/servers/dovecot.py IMAP_CLIENT_LIMIT
# Dovecot's IDLE push comes from inotify, one instance per imap process, and the kernel allows a uid
# fs.inotify.max_user_instances of them (128 here), shared with every other Dovecot of that uid on the
# machine (the tests'). A process past the limit pushes nothing: its sessions hear of new mail on
# Dovecot's 5 s mailbox check. 3,000 sessions at 20 a process took 153 processes, and one mail in five
# waited up to 5 s for Dovecot, the reference's too (section 6.2, first run of 2026-12-02). So the bench's
# Dovecot packs its sessions into at most this many processes.
IMAP_PROCESSES = 60
INOTIFY_LIMIT_WARNING = "inotify instance limit"


def _mail(to: str, subject: str) -> bytes:
    from tests.support.mail import make_mail
    return make_mail(to=to, sender="customer@example.net", subject=subject, body="Steady state probe\n")


@contextlib.contextmanager
def _dovecot_room(sessions: int):
    """Dovecot sized for this many sessions in at most IMAP_PROCESSES imap processes (more sessions a
    process, not more processes: see IMAP_PROCESSES)."""
    from tests.servers import dovecot

    before = dovecot.IMAP_PROCESS_LIMIT, dovecot.IMAP_CLIENT_LIMIT
    per_process = _sessions_per_process(sessions)
    dovecot.IMAP_CLIENT_LIMIT = per_process
    dovecot.IMAP_PROCESS_LIMIT = max(before[0], math.ceil(sessions / per_process))
    try:
        yield
    finally:
        dovecot.IMAP_PROCESS_LIMIT, dovecot.IMAP_CLIENT_LIMIT = before


def _sessions_per_process(sessions: int) -> int:
    return max(SESSIONS_PER_IMAP_PROCESS, math.ceil(sessions / IMAP_PROCESSES))


def _dovecot_without_push(env: BenchEnv) -> int:
    """How many of Dovecot's processes said they could not get an inotify instance (no push from them)."""
    try:
        text = env.dovecot.log_path.read_text(errors="replace")
    except OSError:
        return 0
    return sum(INOTIFY_LIMIT_WARNING in line.lower() for line in text.splitlines())


def _postmaster(env: BenchEnv) -> int | None:
    """The pid of the private PostgreSQL server, to account its CPU (None on SQLite or a given server)."""
    server = env.postgres.server if env.postgres is not None else None
    if server is None or server.workdir is None:
        return None
    try:
        return int((server.workdir / "data" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _holders(reader) -> dict[str, int]:
    """Worker id -> mailboxes it holds an unexpired lease on."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)  # the schema keeps naive UTC
    return dict(reader.all("SELECT lease_owner, count(*) FROM accounts WHERE lease_owner IS NOT NULL "
                           "AND lease_expires_at > ? GROUP BY lease_owner", now))


def run(workdir: Path, size: str = "full", log=print, database: str = "sqlite", mailboxes: int | None = None,
        workers: int | None = None, minutes: float | None = None) -> dict:
    n, steady_minutes, per_minute, n_workers = SIZES[(size, database)]
    n = mailboxes or n
    minutes = minutes or steady_minutes
    per_minute = per_minute or max(1, n / 100)
    n_workers = workers or n_workers
    rng = random.Random(3)
    with _dovecot_room(n + 60), BenchEnv(workdir, database=database) as env:
        t0 = time.perf_counter()
        emails = [env.add_user(f"box{i:04d}") for i in range(n)]
        reference = env.add_user("reference")
        ids = env.connect_many(emails, threads=4)
        connect_seconds = time.perf_counter() - t0
        log(f"mailboxes: connected {n} mailboxes through the auth-code flow in {connect_seconds:.0f} s")
        pages = page_times(env, emails)
        log(f"mailboxes: the Mailboxes page with {n} mailboxes: {pages}")
        for i, email in enumerate(emails):  # one waiting mail each, as Maildir files
            raw = _mail(email, f"Waiting mail {i}")
            cur = env.maildir(email) / "cur"
            (cur / f"{int(time.time())}.M{i}P1.bench,S={len(raw)}:2,").write_bytes(raw)
            env.chown_mail(email)
        env.idp("reset_stats")
        logs = [open(workdir / f"worker-{k + 1}.log", "ab") for k in range(n_workers)]
        procs = [subprocess.Popen([sys.executable, "-m", "connector.cli", "worker"], env=env.env(), cwd=ROOT,
                                  stdout=log_file, stderr=subprocess.STDOUT) for log_file in logs]
        server = watcher = idle = None
        db = env.reader()
        try:
            started = time.perf_counter()
            deadline = time.monotonic() + max(300, n * 1.0)
            while True:
                synced = db.scalar("SELECT count(*) FROM accounts WHERE last_sync_at IS NOT NULL")
                tickets = db.scalar("SELECT count(*) FROM tickets")
                if synced >= n and tickets >= n:
                    break
                dead = [k + 1 for k, proc in enumerate(procs) if proc.poll() is not None]
                if dead or time.monotonic() > deadline:
                    raise RuntimeError(f"first sync incomplete: {synced}/{n} synced, {tickets} tickets"
                                       + (f"; worker {dead} exited" if dead else "") +
                                       f"; see {workdir}/worker-*.log")
                time.sleep(0.2)
            first_sync = time.perf_counter() - started
            errors = db.scalar("SELECT count(*) FROM accounts WHERE status != 'connected'")
            log(f"mailboxes: first sync of {n} mailboxes by {n_workers} worker(s) in {first_sync:.1f} s "
                f"({errors} not connected)")
            stats_first = env.idp_stats()
            server = Server(env, workdir / "serve.log", worker=False)
            idle = IdleWatcher(env, reference, env.user_token(reference))
            idle.start()
            watcher = ApiWatcher(server, interval=0.05)
            watcher.start()
            time.sleep(5)  # the workers' mailboxes are in IDLE now
            held_before = _holders(db)
            log(f"mailboxes: held at the start of the steady state: {sorted(held_before.values(), reverse=True)}")
            samples: list[list[tuple[float, float, float]]] = [[] for _ in procs]
            postmaster = _postmaster(env)
            cpu0 = [cpu_seconds(proc.pid) for proc in procs]
            db_cpu0 = tree_sample(postmaster, memory=False)[1] if postmaster else None
            wall0 = time.perf_counter()
            steady_from = datetime.now()  # the workers log local time
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
                        for proc, sampled in zip(procs, samples):
                            sampled.append((time.perf_counter() - wall0, rss_mb(proc.pid), cpu_seconds(proc.pid)))
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
            cpu1, wall1 = [cpu_seconds(proc.pid) for proc in procs], time.perf_counter()
            db_cpu1 = tree_sample(postmaster, memory=False)[1] if postmaster else None
            stats1 = env.idp_stats()
            watcher.wait_all(order, timeout=60)
            latencies = [watcher.seen[s] - accepted[s] for s in order if s in watcher.seen]
            ref = [idle.at[idle.start_count + i + 1] - ref_accepted[s] for i, s in enumerate(order)
                   if idle.start_count + i + 1 in idle.at]
            rss_end = [rss_mb(proc.pid) for proc in procs]
            peak = [hwm_mb(proc.pid) for proc in procs]
            threads = [len(list(Path(f"/proc/{proc.pid}/task").iterdir())) for proc in procs]
            errors_end = db.scalar("SELECT count(*) FROM accounts WHERE status != 'connected'")
            held_end = _holders(db)
            table = {worker_id: count for worker_id, count in db.all("SELECT id, mailboxes FROM workers")}
        finally:
            db.close()
            for part in (watcher, idle, server):
                if part is not None:
                    part.stop()
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for log_file in logs:
                log_file.close()
        no_push = _dovecot_without_push(env)
        inside = news_timings([workdir / f"worker-{k + 1}.log" for k in range(n_workers)], steady_from)
        # Reference for the first sync: the network part of it, plainly, for a sample of the mailboxes.
        sample = ids[: min(n, 100)]
        tokens = [env.access_token(i) for i in sample]
        ref_seconds = _plain_first_pass(env, [emails[ids.index(i)] for i in sample], tokens)
        per_mailbox_ref = ref_seconds / len(sample)
    steady_seconds = wall1 - wall0
    token_steady = stats1["token_calls_total"] - stats0["token_calls_total"]
    lifetime = env.access_token_lifetime
    per_worker = []
    for k, proc in enumerate(procs):
        worker_id = next((w for w in set(held_end) | set(table) if w.split(":")[1:2] == [str(proc.pid)]), None)
        per_worker.append({
            "worker": k + 1, "pid": proc.pid, "id": worker_id,
            "held_start": held_before.get(worker_id, 0), "held_end": held_end.get(worker_id, 0),
            "workers_table_mailboxes": table.get(worker_id),
            "rss_max_mb": round(max(s[1] for s in samples[k])), "rss_end_mb": round(rss_end[k]),
            "rss_peak_mb": round(peak[k]), "cpu_share": round((cpu1[k] - cpu0[k]) / steady_seconds, 3),
            "threads": threads[k]})
    return {
        "mailboxes": n, "workers": n_workers, "per_worker": per_worker, "connect_seconds": round(connect_seconds, 1),
        "connect_per_mailbox_ms": round(connect_seconds / n * 1000, 1), "page_ms": pages,
        "first_sync_seconds": round(first_sync, 1), "first_sync_per_mailbox_ms": round(first_sync / n * 1000, 1),
        "ref_first_pass_ms": round(per_mailbox_ref * 1000, 1),
        "first_sync_ratio": round(first_sync / (per_mailbox_ref * n), 2),
        "not_connected_after_first_sync": errors, "not_connected_at_end": errors_end,
        "steady_minutes": round(steady_seconds / 60, 1), "mails": len(order), "seen": len(latencies),
        "p50_s": round(percentile(latencies, 50), 3), "p95_s": round(percentile(latencies, 95), 3),
        "max_s": round(max(latencies), 3) if latencies else None,
        "ref_p50_s": round(percentile(ref, 50), 3), "ref_p95_s": round(percentile(ref, 95), 3),
        "ratio_p95": round(percentile(latencies, 95) / percentile(ref, 95), 1) if ref else None,
        # the worst worker (with one worker: that worker)
        "rss_max_mb": max(w["rss_max_mb"] for w in per_worker), "rss_end_mb": max(w["rss_end_mb"] for w in per_worker),
        "rss_peak_mb": max(w["rss_peak_mb"] for w in per_worker),
        "cpu_share": round(sum(w["cpu_share"] for w in per_worker), 3), "threads": sum(threads),
        "database_cpu_share": round((db_cpu1 - db_cpu0) / steady_seconds, 3) if db_cpu0 is not None else None,
        "token_calls_first_sync": stats_first["token_calls_total"],
        "token_calls_first_sync_detail": stats_first["token_calls"],
        "token_calls_steady": token_steady,
        "token_calls_per_mailbox_hour": round(token_steady / n / (steady_seconds / 3600), 3),
        "token_allowance_per_mailbox_hour": round(3600 / lifetime, 2), "access_token_lifetime": lifetime,
        "api_polls": watcher.polls, "inside_worker": inside, "dovecot_processes_without_push": no_push,
        "dovecot_sessions_per_process": _sessions_per_process(n + 60), "latencies_s": sorted(round(x, 3) for x in latencies),
        "database": database, "postgresql": env.database_settings,
    }


NEWS_LINE = re.compile(r"^(\S+ \S+),\d+ .*mailbox (\d+): news to commit ([\d.]+) s \(waiting for a sync thread "
                       r"([\d.]+) s, ending IDLE ([\d.]+) s, pass ([\d.]+) s: (.*)\)$")


def news_timings(paths: list[Path], since: datetime) -> dict:
    """What the workers logged for each new mail of the steady state (worker/running.py: from the IDLE news
    to the commit, and where that time went): percentiles, and the slowest mails' lines."""
    rows = []
    for path in paths:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            match = NEWS_LINE.match(line)
            if not match or datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S") < since.replace(microsecond=0):
                continue
            phases = dict((name, float(sec)) for name, sec in re.findall(r"(\w+) ([\d.]+) s", match.group(7)))
            rows.append({"total": float(match.group(3)), "pool_wait": float(match.group(4)),
                         "idle_done": float(match.group(5)), "pass": float(match.group(6)), **phases})
    if not rows:
        return {"passes": 0}
    totals = [r["total"] for r in rows]
    return {"passes": len(rows), "p50_s": round(percentile(totals, 50), 3), "p95_s": round(percentile(totals, 95), 3),
            "max_s": round(max(totals), 3),
            "max_by_phase_s": {k: round(max(r.get(k, 0.0) for r in rows), 3)
                               for k in ("pool_wait", "idle_done", "pass", "list", "fetch", "store")},
            "slowest": sorted(rows, key=lambda r: -r["total"])[:5]}


def page_times(env: BenchEnv, emails: list[str], repeat: int = 5) -> dict[str, float]:
    """Median milliseconds of GET /accounts as the agent who owns every mailbox (so each row has all its
    forms): the first page, the last page, and a search for the last address."""
    from connector.mailbox_list import PAGE_SIZE

    client = env._client()
    last = max(1, math.ceil(len(emails) / PAGE_SIZE))
    paths = {"first_page": "/accounts", "last_page": f"/accounts?page={last}",
             "search": f"/accounts?q={sorted(emails)[-1]}"}
    times = {}
    for name, path in paths.items():
        samples = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            response = client.get(path)
            samples.append(time.perf_counter() - t0)
            assert response.status_code == 200, (path, response.status_code)
        times[name] = round(sorted(samples)[len(samples) // 2] * 1000, 1)
    return times


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
    ok_rss = r["rss_peak_mb"] < 1024 if "rss_peak_mb" in r else r["rss_max_mb"] < 1024
    ok_tokens = r["token_calls_per_mailbox_hour"] <= r["token_allowance_per_mailbox_hour"]
    workers = r.get("workers", 1)
    lines = [*([f"- Database: {describe(r['postgresql'])}."] if r.get("postgresql") else []),
             f"- {r['mailboxes']:,} mailboxes connected through the auth-code flow ({r['connect_seconds']} s"
             + (f", {r['connect_per_mailbox_ms']} ms a mailbox" if "connect_per_mailbox_ms" in r else "") + "), "
             + (f"one `connector worker` ({r['threads']} threads at the end)." if workers == 1 else
                f"{workers} `connector worker` processes started together ({r['threads']} threads in all at the end).")]
    if r.get("page_ms"):
        p = r["page_ms"]
        lines.append(f"- The Mailboxes page (GET /accounts, 50 mailboxes a page, each with its forms) with "
                     f"{r['mailboxes']:,} mailboxes: **first page {p['first_page']} ms, last page {p['last_page']} ms, "
                     f"a search for one address {p['search']} ms** (median of 5).")
    lines += [
        f"- **First sync of all: {r['first_sync_seconds']} s** ({r['first_sync_per_mailbox_ms']} ms a mailbox); "
        f"reference, the same network steps by a plain IMAPClient one mailbox after another: "
        f"{r['ref_first_pass_ms']} ms a mailbox, so {r['first_sync_ratio']}x the reference for all of them. "
        f"{r['not_connected_after_first_sync']} mailboxes not `connected` after it, {r['not_connected_at_end']} at "
        "the end.",
        f"- Steady state, {r['steady_minutes']} min, {r['mails']} mails to random mailboxes (1% a minute): "
        f"**latency p50 {r['p50_s']} s, p95 {r['p95_s']} s, max {r['max_s']} s**; target p95 < 5 s: "
        f"**{'met' if ok_p95 else 'missed'}**. Reference (IDLE on a mailbox getting a copy): p50 {r['ref_p50_s']} s, "
        f"p95 {r['ref_p95_s']} s ({r['ratio_p95']}x).",
    ]
    inside = r.get("inside_worker") or {}
    if inside.get("passes"):
        slow = inside["slowest"][0]
        lines.append(
            f"- Inside the worker{'s' if workers > 1 else ''}, from the IDLE news to the commit ({inside['passes']} "
            f"passes, as logged): p50 {inside['p50_s']} s, p95 {inside['p95_s']} s, max {inside['max_s']} s; the "
            f"slowest spent {slow['pool_wait']} s waiting for a sync thread, {slow['idle_done']} s ending IDLE, "
            f"{slow.get('list', 0)} s listing, {slow.get('fetch', 0)} s fetching and parsing, {slow.get('store', 0)} s "
            "storing. The rest of a latency is Dovecot's notice (the reference) and the API's next poll.")
    if "dovecot_processes_without_push" in r:
        lines.append(f"- Dovecot: {r['dovecot_sessions_per_process']} IMAP sessions a process; "
                     f"{r['dovecot_processes_without_push']} of its processes logged that they got no inotify "
                     "instance (their sessions hear of new mail only on the 5 s mailbox check).")
    if workers == 1:
        lines.append(f"- **Worker RSS: {r['rss_max_mb']} MB at most** in the steady state (end {r['rss_end_mb']} MB"
                     + (f", peak over the whole run {r['rss_peak_mb']} MB" if "rss_peak_mb" in r else "") +
                     f"); target < 1 GB: **{'met' if ok_rss else 'missed'}**. **CPU share at steady state: "
                     f"{r['cpu_share']:.1%} of one core**.")
    else:
        lines += ["", "| worker | mailboxes held (leases), steady start -> end | workers table | RSS peak MB (VmHWM) "
                      "| RSS end MB | CPU share at steady state |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for w in r["per_worker"]:
            lines.append(f"| {w['worker']} (pid {w['pid']}) | {w['held_start']} -> {w['held_end']} | "
                         f"{w['workers_table_mailboxes']} | {w['rss_peak_mb']} | {w['rss_end_mb']} | "
                         f"{w['cpu_share']:.1%} |")
        lines += ["", f"- **Each worker's RSS under 1 GB: {'met' if ok_rss else 'missed'}** (largest peak "
                      f"{r['rss_peak_mb']} MB). CPU share of the {workers} workers together at steady state: "
                      f"{r['cpu_share']:.1%} of one core"
                  + (f"; the PostgreSQL server's processes {r['database_cpu_share']:.1%}."
                     if r.get("database_cpu_share") is not None else ".")]
    lines.append(
        f"- **Token endpoint calls: {r['token_calls_first_sync']} during the first sync, {r['token_calls_steady']} in "
        f"the steady state = {r['token_calls_per_mailbox_hour']} per mailbox per hour**; allowance one per access-"
        f"token lifetime ({r['access_token_lifetime']} s) = {r['token_allowance_per_mailbox_hour']} per mailbox per "
        f"hour: **{'met' if ok_tokens else 'missed'}**.")
    return lines
