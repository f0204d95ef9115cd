"""Import over Microsoft Graph against a raw fetch of the same mails, in the same run.

    python -m bench.graph_import [--size tiny|full] [--count N]

A child process runs the test identity provider and the Graph stand-in (tests/graph) over HTTPS and
delivers N corpus mails (the corpus cycled in name order, each with its own Message-ID, as
bench/importing.py does) to one mailbox; this process signs in through msal like the product and
measures, each twice (the better is reported):

- raw: a plain loop of `requests` GETs of every mail's `/me/messages/{id}/$value` on one keep-alive
  session, the ids listed beforehand (untimed); also the same GETs from 4 threads (Graph's per-mailbox
  limit), to show what parallelism alone gives;
- client: connector's GraphMailbox alone: the delta round over the Inbox (pages of 1,000) and `fetch_mime`
  of each page, 4 requests at a time through the mailbox gate; timed from the first request to the last byte;
- product: the whole import as the worker runs it - `AccountSync` passes over the Graph transport into a
  fresh SQLite database (delta, MIME fetch, parse, dedup, threading, tickets, pack files), tokens from
  tokens.py out of the mailbox's stored msal cache, until a pass imports nothing more;
- latency: an in-process `Worker` holds the mailbox; another user of the tenant sends it a mail through
  sendMail, and the time until its ticket exists is measured, 5 times (delta polling every 5 s: at most
  one poll interval plus one pass).

The ratio is client time / raw time (under 1: faster than the plain loop). Both read the same bytes
from the same server on this machine, so the figures say what the client costs, not what Exchange
Online would: there, latency per request dominates and 4 at a time matters more. The stand-in's HTTP
server (werkzeug) closes every connection after its answer, so here each GET, raw or not, pays a TLS
handshake; Graph keeps connections alive.
Not part of `python -m bench` yet (its runner is the lead's): run it on its own.
"""
from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parent.parent
SIZES = {"tiny": 60, "full": 5000}
RESULTS = ROOT / "bench" / "results" / "graph_import.json"


# ---- the child: identity provider, Graph stand-in, one mailbox full of mail ---------------------

def serve(workdir: Path, count: int) -> int:
    sys.path.insert(0, str(ROOT))
    from bench.importing import corpus, with_message_id
    from tests.graph import GraphServer
    from tests.idp import IdentityProvider
    from tests.support.graph import make_graph_org
    from tests.support.tls import TestCA

    ca = TestCA(workdir)
    idp = IdentityProvider(ca)
    idp.start()
    graph = GraphServer(ca, idp).start()
    org = make_graph_org(idp, ca.ca_path)
    user = org.add_user("bench")
    sender = org.add_user("sender")
    mails = corpus()
    size = 0
    for i in range(count):
        name, raw = mails[i % len(mails)]
        data = with_message_id(raw, f"<graph-bench-{i:06d}-{name}@bench.connector.test>")
        graph.deliver(user, data)
        size += len(data)
    print(json.dumps({"graph": graph.url, "authority": f"{idp.url}/{org.tenant.tenant_id}",
                      "client_id": org.app.client_id, "secret": org.secret, "ca": str(ca.ca_path),
                      "user": user, "sender": sender, "count": count, "bytes": size}), flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    graph.stop()
    idp.stop()
    return 0


# ---- the parent: sign in, measure ---------------------------------------------------------------

def _token_source(info: dict, user: str | None = None, with_cache: bool = False):
    import msal
    import requests

    from tests.idp.driver import complete_authorization
    from tests.support.graph import MAIL_SCOPES, REDIRECT
    cache = msal.SerializableTokenCache()

    http = requests.Session()
    http.trust_env, http.verify = False, info["ca"]
    app = msal.ConfidentialClientApplication(info["client_id"], client_credential=info["secret"],
                                             authority=info["authority"], instance_discovery=False, http_client=http,
                                             token_cache=cache)
    flow = app.initiate_auth_code_flow(MAIL_SCOPES + ["email"], redirect_uri=REDIRECT)
    final = complete_authorization(flow["auth_uri"], user or info["user"], "pw", ca_path=info["ca"])
    app.acquire_token_by_auth_code_flow(flow, {k: v[0] for k, v in parse_qs(urlsplit(final).query).items()})
    account = app.get_accounts()[0]
    lock = threading.Lock()

    def token(force_refresh: bool = False) -> str:
        with lock:
            return app.acquire_token_silent(MAIL_SCOPES, account, force_refresh=force_refresh)["access_token"]
    if with_cache:
        return token, cache.serialize(), account["home_account_id"]
    return token


def _product(info: dict, workdir: Path):
    """A connector installation in `workdir` with the bench mailbox connected over Graph: (runtime, account id)."""
    from connector import registration
    from connector.models import Account
    from connector.runtime import Runtime

    idp_url, tenant = info["authority"].rsplit("/", 1)
    rt = Runtime.create({"app": {"base_url": "http://localhost", "data_dir": str(workdir / "instance")},
                         "database": {"url": f"sqlite:///{workdir / 'connector.db'}"},
                         "microsoft": {"authority_host": idp_url, "graph_host": info["graph"]},
                         "tls": {"ca_bundle": info["ca"]}, "worker": {"poll_interval_seconds": 60}})
    rt.db.migrate()
    _, cache, home = _token_source(info, with_cache=True)
    with rt.db.session() as session:
        registration.save(session, rt.settings, rt.vault, client_id=info["client_id"], tenant=tenant,
                          client_secret=info["secret"], secret_expires_on=None, by="bench")
        account = Account(address=info["user"], provider="microsoft", transport="graph", token_owner=info["user"],
                          home_account_id=home, token_cache_enc=rt.vault.encrypt(cache), status="connected")
        session.add(account)
        session.flush()
        return rt, account.id


def product_import(info: dict, workdir: Path) -> tuple[float, int]:
    """The whole import through the sync over Graph; (seconds, mails imported)."""
    from connector.sync import AccountSync

    rt, account_id = _product(info, workdir)
    sync = AccountSync(rt, account_id)
    started = time.perf_counter()
    imported = 0
    try:
        while True:
            result = sync.run_pass()
            imported += result.imported
            if not result.imported and not sync.has_news():
                break
    finally:
        sync.close()
    seconds = time.perf_counter() - started
    rt.db.engine.dispose()
    return seconds, imported


def new_mail_latency(info: dict, workdir: Path, samples: int = 5) -> list[float]:
    """Seconds from sendMail (another user of the tenant) to the ticket, with the worker polling by delta."""
    import requests
    from sqlalchemy import func, select

    from connector.models import Ticket
    from connector.worker import Worker
    from tests.support.mail import make_mail

    rt, account_id = _product(info, workdir)
    sender_token = _token_source(info, user=info["sender"])
    worker = Worker(rt, name="bench")
    worker.start_background()
    http = requests.Session()
    http.trust_env, http.verify = False, info["ca"]

    def tickets() -> int:
        with rt.db.session() as session:
            return session.scalar(select(func.count()).select_from(Ticket).where(Ticket.account_id == account_id))
    latencies = []
    try:
        deadline = time.monotonic() + 600
        while tickets() < info["count"] and time.monotonic() < deadline:  # the backlog first
            time.sleep(0.5)
        for i in range(samples):
            before = tickets()
            time.sleep(1.3 * (i + 1) % 5)  # spread the sends over the poll interval
            raw = make_mail(to=info["user"], sender=info["sender"], subject=f"Latency {i}")
            sent_at = time.perf_counter()
            http.post(f"{info['graph']}/v1.0/me/sendMail", data=base64.b64encode(raw),
                      headers={"Authorization": f"Bearer {sender_token()}", "Content-Type": "text/plain"},
                      timeout=30).raise_for_status()
            while tickets() == before:
                if time.perf_counter() - sent_at > 60:
                    raise RuntimeError("the new mail did not arrive within 60 s")
                time.sleep(0.02)
            latencies.append(time.perf_counter() - sent_at)
    finally:
        worker.stop(wait=True, timeout=30)
        rt.db.engine.dispose()
    return latencies


def _session(info: dict, token: str):
    import requests
    session = requests.Session()
    session.trust_env, session.verify = False, info["ca"]
    session.headers.update({"Authorization": f"Bearer {token}", "Prefer": 'IdType="ImmutableId"'})
    return session


def _ids(info: dict, token: str) -> list[str]:
    session = _session(info, token)
    ids, link = [], f"{info['graph']}/v1.0/me/mailFolders/inbox/messages?$select=id&$top=1000"
    while link:
        page = session.get(link, timeout=60).json()
        ids += [m["id"] for m in page["value"]]
        link = page.get("@odata.nextLink")
    return ids


def raw_fetch(info: dict, token: str, ids: list[str], threads: int = 1) -> tuple[float, int]:
    base = f"{info['graph']}/v1.0/me/messages/"
    local = threading.local()

    def get(key: str) -> int:
        if not hasattr(local, "session"):
            local.session = _session(info, token)
        answer = local.session.get(base + key + "/$value", timeout=60)
        answer.raise_for_status()
        return len(answer.content)
    started = time.perf_counter()
    if threads == 1:
        size = sum(get(key) for key in ids)
    else:
        with ThreadPoolExecutor(threads) as pool:
            size = sum(pool.map(get, ids))
    return time.perf_counter() - started, size


def client_fetch(info: dict, token) -> tuple[float, int, int]:
    from connector.mail.graph import GraphMailbox

    started = time.perf_counter()
    count = size = 0
    with GraphMailbox(info["user"], token, graph_host=info["graph"], ca_bundle=info["ca"]) as mailbox:
        for page in mailbox.delta_pages("Inbox", None, page_size=1000):
            for _, raw in mailbox.fetch_mime([m.id for m in page.messages]):
                count += 1
                size += len(raw)
    return time.perf_counter() - started, count, size


def run(workdir: Path, size: str, log=print, count: int | None = None) -> dict:
    count = count or SIZES[size]
    child = subprocess.Popen([sys.executable, "-m", "bench.graph_import", "--serve", str(workdir),
                              "--count", str(count)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        line = child.stdout.readline()
        if not line:
            raise RuntimeError(f"the Graph stand-in did not start (exit {child.wait()})")
        info = json.loads(line)
        log(f"{count} mails ({info['bytes'] / 1e6:.1f} MB) delivered to the stand-in")
        token = _token_source(info)
        ids = _ids(info, token())
        assert len(ids) == count, (len(ids), count)
        raw, raw4, client, product = [], [], [], []
        for round_ in (1, 2):
            raw.append(raw_fetch(info, token(), ids))
            raw4.append(raw_fetch(info, token(), ids, threads=4))
            client.append(client_fetch(info, token))
            (workdir / f"product{round_}").mkdir()
            product.append(product_import(info, workdir / f"product{round_}"))
            log(f"round {round_}: raw {raw[-1][0]:.2f} s, raw x4 {raw4[-1][0]:.2f} s, client {client[-1][0]:.2f} s, "
                f"product {product[-1][0]:.2f} s")
        best_raw, best_raw4, best_client, best_product = min(raw), min(raw4), min(client), min(product)
        assert best_client[1] == count and best_client[2] == best_raw[1] == info["bytes"], "not the same mails"
        assert best_product[1] == count, f"the product imported {best_product[1]} of {count} mails"
        (workdir / "latency").mkdir()
        latencies = new_mail_latency(info, workdir / "latency")
        log("new-mail latency: " + ", ".join(f"{x:.2f} s" for x in latencies))
        return {"messages": count, "bytes": info["bytes"], "raw_seconds": best_raw[0],
                "raw4_seconds": best_raw4[0], "client_seconds": best_client[0], "product_seconds": best_product[0],
                "ratio": best_client[0] / best_raw[0], "ratio_raw4": best_client[0] / best_raw4[0],
                "product_ratio": best_product[0] / best_raw[0], "latency_seconds": latencies}
    finally:
        if child.stdin:
            child.stdin.close()
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def report(result: dict) -> list[str]:
    n, mb = result["messages"], result["bytes"] / 1e6
    rate = lambda seconds: f"{n / seconds:,.0f} mails/s"  # noqa: E731
    return [
        f"Graph import of {n:,} mails ({mb:.1f} MB) from the stand-in over HTTPS on loopback:",
        f"  raw loop of requests GETs of $value: {result['raw_seconds']:.2f} s ({rate(result['raw_seconds'])})",
        f"  the same GETs from 4 threads:        {result['raw4_seconds']:.2f} s ({rate(result['raw4_seconds'])})",
        f"  GraphMailbox delta + fetch_mime:     {result['client_seconds']:.2f} s ({rate(result['client_seconds'])})",
        f"  the product's import (sync + store): {result['product_seconds']:.2f} s "
        f"({rate(result['product_seconds'])})",
        f"  ratio client / raw loop: {result['ratio']:.2f}; client / raw x4: {result['ratio_raw4']:.2f}; "
        f"product / raw loop: {result['product_ratio']:.2f}",
        "  new-mail latency (sendMail -> ticket, delta polling): "
        + ", ".join(f"{x:.1f}" for x in result["latency_seconds"])
        + f" s; max {max(result['latency_seconds']):.1f} s",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.graph_import", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=list(SIZES), default="full")
    parser.add_argument("--count", type=int, help="mails (default: 60 tiny, 5,000 full)")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.serve, args.count or SIZES[args.size])
    import tempfile
    with tempfile.TemporaryDirectory(prefix="bench-graph-") as workdir:
        result = run(Path(workdir), args.size, count=args.count)
    for line in report(result):
        print(line)
    if args.size == "full" and not args.count:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
