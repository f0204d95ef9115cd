"""Agents' ticket pages and the ticket REST API: lists, search, permissions, safe rendering."""
from __future__ import annotations

import itertools
import re

import pytest

from connector import users
from connector.mail.parse import parse_message
from connector.models import Account, AccountMember
from connector.ingest import FetchedMail, ingest
from tests.support.app import PASSWORD, csrf_token, login
from tests.support.mail import make_mail

_n = itertools.count(1)


@pytest.fixture
def mailbox(app):
    """create(owner, address=None) -> Account, without tokens (the pages do not need them)."""
    rt = app.extensions["connector"]

    def create(owner, address=None):
        with rt.db.session() as session:
            account = Account(address=address or f"desk{next(_n)}@company.test", connected_by_id=owner.id)
            session.add(account)
            session.flush()
            return account
    return create


@pytest.fixture
def deliver(app):
    """deliver(account, raw) -> ticket id: import one mail exactly as the sync does."""
    rt = app.extensions["connector"]

    def run(account, raw):
        with rt.db.session() as session:
            return ingest(session, session.get(Account, account.id), [FetchedMail(raw, parse_message(raw))])[0].ticket_id
    return run


def api_token(app, user):
    with app.extensions["connector"].db.session() as session:
        return users.issue_api_token(session, session.get(type(user), user.id))


def test_list_is_newest_first_searchable_filterable_and_paginated(app, client, agent, mailbox, deliver):
    box = mailbox(agent)
    ids = [deliver(box, make_mail(to=box.address, subject=f"Case {i}", sender=f"c{i}@example.net",
                                  body=f"serial number XK-{i}")) for i in range(55)]
    login(client, agent.email)
    page = client.get("/tickets").get_data(as_text=True)
    assert page.index("Case 54") < page.index("Case 53")
    assert "Case 4<" not in page  # on page two
    second = client.get("/tickets?page=2").get_data(as_text=True)
    assert "Case 4<" in second and "Case 54" not in second

    token = api_token(app, agent)
    auth = {"Authorization": f"Bearer {token}"}
    first = client.get("/api/v1/tickets", headers=auth).get_json()
    assert first["next_page"] == 2 and len(first["items"]) == 50
    item = first["items"][0]
    assert set(item) == {"id", "number", "subject", "status", "customer", "account", "created_at", "updated_at",
                         "article_count"}
    assert (item["subject"], item["account"], item["article_count"], item["customer"]) == \
        ("Case 54", box.address, 1, "c54@example.net")
    assert client.get("/api/v1/tickets?page=2", headers=auth).get_json()["next_page"] is None
    found = client.get("/api/v1/tickets?q=XK-17", headers=auth).get_json()["items"]
    assert [t["subject"] for t in found] == ["Case 17"]
    assert [t["subject"] for t in client.get("/api/v1/tickets?q=c3@example", headers=auth).get_json()["items"]] \
        == ["Case 3"]
    assert client.get("/api/v1/tickets?status=closed", headers=auth).get_json()["items"] == []
    assert len(client.get(f"/api/v1/tickets?account={box.address}", headers=auth).get_json()["items"]) == 50
    assert client.get("/api/v1/tickets?status=bogus", headers=auth).status_code == 400
    assert "Case 17" in client.get("/tickets?q=XK-17").get_data(as_text=True)
    assert ids


def test_agents_see_only_tickets_of_their_mailboxes(app, client, make_user, mailbox, deliver):
    alice, bob, admin = make_user("agent"), make_user("agent"), make_user("admin")
    box = mailbox(alice)
    ticket_id = deliver(box, make_mail(to=box.address, subject="Alice's secret case"))
    login(client, bob.email)
    assert "secret case" not in client.get("/tickets").get_data(as_text=True)
    assert client.get(f"/tickets/{ticket_id}").status_code == 404
    auth = {"Authorization": f"Bearer {api_token(app, bob)}"}
    assert client.get(f"/api/v1/tickets/{ticket_id}", headers=auth).status_code == 404
    assert client.get("/api/v1/tickets", headers=auth).get_json()["items"] == []
    with app.extensions["connector"].db.session() as session:
        session.add(AccountMember(account_id=box.id, user_id=bob.id))
    assert client.get(f"/tickets/{ticket_id}").status_code == 200
    assert client.get(f"/api/v1/tickets/{ticket_id}", headers=auth).status_code == 200
    admin_client = app.test_client()
    login(admin_client, admin.email)
    assert admin_client.get(f"/tickets/{ticket_id}").status_code == 200
    assert client.get("/api/v1/tickets").status_code == 401


def test_ticket_detail_api_and_attachments(app, client, agent, mailbox, deliver):
    from email.message import EmailMessage

    box = mailbox(agent)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = "c@example.net", box.address, "Invoice", "<inv@x>"
    msg.set_content("See attached.")
    msg.add_attachment(b"<html><script>alert(1)</script></html>", maintype="text", subtype="html",
                       filename="evil.html")
    ticket_id = deliver(box, msg.as_bytes())
    auth = {"Authorization": f"Bearer {api_token(app, agent)}"}
    detail = client.get(f"/api/v1/tickets/{ticket_id}", headers=auth).get_json()
    [article] = detail["articles"]
    assert article["direction"] == "in" and article["message_id"] == "<inv@x>" and article["delivery"] is None
    assert article["from"] == "c@example.net" and article["to"] == [box.address]
    assert "See attached." in article["body_text"]
    [attachment] = article["attachments"]
    assert attachment["filename"] == "evil.html" and len(attachment["sha256"]) == 64

    login(client, agent.email)
    page = client.get(f"/tickets/{ticket_id}").get_data(as_text=True)
    link = re.search(r'href="(/tickets/\d+/attachments/\d+)"', page).group(1)
    download = client.get(link)
    assert download.headers["Content-Disposition"].startswith("attachment")
    assert download.headers["X-Content-Type-Options"] == "nosniff"
    assert download.mimetype == "application/octet-stream"
    assert download.data == b"<html><script>alert(1)</script></html>"


def test_html_mail_is_sanitised_framed_and_remote_images_wait(app, client, agent, mailbox, deliver):
    box = mailbox(agent)
    html = ('<p onclick="steal()">Hello <b>there</b></p><script>alert(1)</script>'
            '<img src="https://tracker.example/pixel.gif" alt="pixel"><a href="javascript:alert(2)">x</a>')
    ticket_id = deliver(box, make_mail(to=box.address, subject="Newsletter", html=html))
    login(client, agent.email)
    page = client.get(f"/tickets/{ticket_id}").get_data(as_text=True)
    assert "<script>alert(1)" not in page
    frame = re.search(r'<iframe sandbox="([^"]*)"[^>]*?\ssrc="([^"]+)"', page)
    assert "allow-scripts" not in frame.group(1)
    body = client.get(frame.group(2).replace("&amp;", "&"))
    text = body.get_data(as_text=True)
    assert "<b>there</b>" in text
    for bad in ("<script", "onclick", "javascript:", "tracker.example"):
        assert bad not in text
    assert "default-src 'none'" in body.headers["Content-Security-Policy"]
    assert "https:" not in body.headers["Content-Security-Policy"]
    assert body.headers["X-Blocked-Remote-Images"] == "1"
    shown = client.get(frame.group(2).replace("&amp;", "&") + "&images=1")
    assert "tracker.example/pixel.gif" in shown.get_data(as_text=True)
    assert "https:" in shown.headers["Content-Security-Policy"]
    assert "<script" not in shown.get_data(as_text=True)


def test_status_changes_need_csrf(app, client, agent, mailbox, deliver):
    box = mailbox(agent)
    ticket_id = deliver(box, make_mail(to=box.address, subject="Close me"))
    login(client, agent.email)
    page = client.get(f"/tickets/{ticket_id}").get_data(as_text=True)
    assert client.post(f"/tickets/{ticket_id}/status", data={"status": "closed"}).status_code == 400
    client.post(f"/tickets/{ticket_id}/status", data={"status": "closed", "csrf_token": csrf_token(page)})
    auth = {"Authorization": f"Bearer {api_token(app, agent)}"}
    assert client.get(f"/api/v1/tickets/{ticket_id}", headers=auth).get_json()["status"] == "closed"
    assert client.get("/api/v1/tickets?status=closed", headers=auth).get_json()["items"][0]["id"] == ticket_id


def test_quarantine_is_for_admins(app, client, agent, admin):
    login(client, agent.email)
    assert client.get("/admin/quarantine").status_code == 403
    other = app.test_client()
    login(other, admin.email, PASSWORD)
    assert "Every mail was imported" in other.get("/admin/quarantine").get_data(as_text=True)


# -- file names: shown and downloaded safely, whatever the sender wrote ------------------------------------

HOSTILE_NAMES = {
    "photo\u202egpj.exe": "photogpj.exe",             # RIGHT-TO-LEFT OVERRIDE: would show "photoexe.jpg"
    "report\u2066\u2067\u200f.pdf\u2069.exe": "report.pdf.exe",  # isolates and marks
    "Отчёт — 2026 ✓.pdf": "Отчёт — 2026 ✓.pdf",          # not Latin-1: must not break the header
    "日本語の請求書.xlsx": "日本語の請求書.xlsx",
    'say "hi".txt': 'say "hi".txt',                       # a quote inside the header's quoted string
}


def mail_with_files(to: str, names) -> bytes:
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = "c@example.net", to, "Files", "<files@x>"
    msg.set_content("See attached.")
    for i, name in enumerate(names):
        msg.add_attachment(f"file {i}".encode(), maintype="application", subtype="octet-stream", filename=name)
    return msg.as_bytes()


def filename_from_disposition(header: str) -> str:
    """What a browser saves the file as: RFC 6266 prefers filename* (RFC 5987) over filename."""
    from urllib.parse import unquote

    header.encode("latin-1")  # what any WSGI server must be able to send
    star = re.search(r"filename\*=UTF-8''([^;\s]+)", header)
    if star:
        return unquote(star.group(1), encoding="utf-8", errors="strict")
    return re.search(r'filename="([^"]*)"', header).group(1)


def test_attachment_names_are_shown_and_downloaded_without_controls(app, client, agent, mailbox, deliver):
    box = mailbox(agent)
    ticket_id = deliver(box, mail_with_files(box.address, HOSTILE_NAMES))
    login(client, agent.email)
    page = client.get(f"/tickets/{ticket_id}").get_data(as_text=True)
    links = re.findall(r'<a href="(/tickets/\d+/attachments/\d+)"><bdi>(.*?)</bdi></a>', page)
    from html import unescape

    assert [unescape(name) for _, name in links] == list(HOSTILE_NAMES.values())
    detail = client.get(f"/api/v1/tickets/{ticket_id}", headers={"Authorization": f"Bearer {api_token(app, agent)}"})
    assert [a["filename"] for a in detail.get_json()["articles"][0]["attachments"]] == list(HOSTILE_NAMES.values())
    for (url, _), shown in zip(links, HOSTILE_NAMES.values()):
        download = client.get(url)
        header = download.headers["Content-Disposition"]
        assert header.startswith("attachment;") and header.isascii(), header
        assert filename_from_disposition(header) == shown
        fallback = re.search(r'filename="([^"]*)"', header).group(1)
        assert fallback.isascii() and fallback.split(".")[-1] == shown.split(".")[-1]  # the true extension


def test_downloads_with_any_name_work_under_gunicorn(app, app_config, agent, mailbox, deliver):
    """HTTP/1.1 headers are Latin-1 on the wire; gunicorn answers 500 for anything else."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import requests

    from tests.support.net import free_port

    box = mailbox(agent)
    ticket_id = deliver(box, mail_with_files(box.address, HOSTILE_NAMES))
    port = free_port()
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")} | {
        "CONNECTOR_CONFIG": os.devnull, "CONNECTOR_APP_BASE_URL": f"http://127.0.0.1:{port}",
        "CONNECTOR_APP_DATA_DIR": app_config["app"]["data_dir"], "CONNECTOR_DATABASE_URL": app_config["database"]["url"],
        "CONNECTOR_MICROSOFT_AUTHORITY_HOST": app_config["microsoft"]["authority_host"]}
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}", "wsgi:app"],
                              cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    http = requests.Session()
    http.trust_env = False
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, server.stdout.read().decode(errors="replace")
            try:
                if http.get(base + "/api/v1/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "gunicorn did not answer"
            time.sleep(0.1)
        token = csrf_token(http.get(base + "/login").text)
        assert http.post(base + "/login", data={"email": agent.email, "password": PASSWORD, "csrf_token": token},
                         allow_redirects=False).status_code == 302
        page = http.get(f"{base}/tickets/{ticket_id}").text
        links = re.findall(r'href="(/tickets/\d+/attachments/\d+)"', page)
        assert len(links) == len(HOSTILE_NAMES)
        for link, shown in zip(links, HOSTILE_NAMES.values()):
            download = http.get(base + link)
            assert download.status_code == 200, (shown, download.status_code)
            # requests decodes header bytes as Latin-1, as the wire carries them
            assert filename_from_disposition(download.headers["Content-Disposition"]) == shown
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server.stdout.close()
        http.close()


def test_the_mail_body_is_sandboxed_by_its_own_policy(app, client, agent, mailbox, deliver):
    """Opened directly, the body's URL is a sandboxed document with an opaque origin; only inside a frame
    (Sec-Fetch-Dest, which only the browser sets) does it keep its origin, and never may it run script."""
    box = mailbox(agent)
    ticket_id = deliver(box, make_mail(to=box.address, subject="Framed", html="<p>Hello <b>there</b></p>"))
    login(client, agent.email)
    page = client.get(f"/tickets/{ticket_id}").get_data(as_text=True)
    url = re.search(r'<iframe sandbox="[^"]*"[^>]*?\ssrc="([^"]+)"', page).group(1).replace("&amp;", "&")

    def sandbox(response) -> list[str]:
        directives = [d.strip() for d in response.headers["Content-Security-Policy"].split(";")]
        [tokens] = [d.split()[1:] for d in directives if d.split()[:1] == ["sandbox"]]
        return tokens

    for headers in ({}, {"Sec-Fetch-Dest": "document"}, {"Sec-Fetch-Dest": "empty"}):
        direct = client.get(url, headers=headers)
        assert direct.status_code == 200 and "<b>there</b>" in direct.get_data(as_text=True)
        assert sorted(sandbox(direct)) == ["allow-popups", "allow-popups-to-escape-sandbox"], headers
        assert "Sec-Fetch-Dest" in direct.headers["Vary"]
    framed = client.get(url, headers={"Sec-Fetch-Dest": "iframe"})
    assert sorted(sandbox(framed)) == ["allow-popups", "allow-popups-to-escape-sandbox", "allow-same-origin"]
    for response in (framed, client.get(url + "&images=1")):
        assert "allow-scripts" not in sandbox(response) and "allow-forms" not in sandbox(response)
