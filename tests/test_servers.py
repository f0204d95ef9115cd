"""Self-tests of the real mail servers in tests/servers: if these fail, integration tests mean nothing.

The IdP here is a stub inside this file (fixed tokens over HTTPS from the TestCA); the real test IdP
is exercised elsewhere.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import shutil
import smtplib
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import aiosmtplib
import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from tests.servers import DovecotServer, SmtpServer, dovecot_available
from tests.support.tls import TestCA

if not dovecot_available():
    if os.environ.get("CI"):
        pytest.fail("dovecot/doveadm not installed but CI is set: the mail server tests must run there",
                    pytrace=False)
    pytest.skip("dovecot not installed (apt-get install dovecot-imapd dovecot-lmtpd)", allow_module_level=True)

ALICE = "alice@example.com"
BOB = "bob@example.com"
SHARED = "shared@example.com"
ALICE_TOKEN = "alice-" + secrets.token_urlsafe(24)
BOB_TOKEN = "bob-" + secrets.token_urlsafe(24)
# JWT-sized: base64 of the XOAUTH2 string is ~4 KB, far past aiosmtpd's 512-byte default.
LONG_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9." + secrets.token_urlsafe(2250) + ".sig"


class IntrospectionStub:
    """RFC 7662-style introspection over HTTPS: token -> owner; `?user=` may name a delegated mailbox.

    `/introspect/grant` answers Dovecot's password-grant passdb (username=<login>&password=<token>),
    the path delegated logins take (see tests/servers/dovecot.py)."""

    def __init__(self, ca: TestCA) -> None:
        self.owners = {ALICE_TOKEN: ALICE, BOB_TOKEN: BOB, LONG_TOKEN: ALICE}
        self.delegates = {SHARED: {ALICE}}  # mailbox -> token owners with Full Access
        self.send_as: dict[str, set[str]] = {}  # mailbox -> token owners with Send As
        self.requests: list[tuple[str, str | None]] = []  # (token, user query)
        self.grants: list[tuple[str, str]] = []  # (token, login) of password-grant requests
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as Dovecot's HTTP client reuses connections

            def do_POST(self) -> None:
                body = parse_qs(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
                if urlsplit(self.path).path.endswith("/grant"):
                    token, login = body.get("password", [""])[0], body.get("username", [""])[0]
                    stub.grants.append((token, login))
                    answer = stub.answer(token, login)
                    status = 200 if answer["active"] else 400
                    answer = {**answer, "access_token": token, "token_type": "Bearer"} if answer["active"] \
                        else {"error": "invalid_grant"}
                else:
                    token = body.get("token", [""])[0]
                    user = parse_qs(urlsplit(self.path).query).get("user", [None])[0]
                    stub.requests.append((token, user))
                    status, answer = 200, stub.answer(token, user)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # Handshake in the handler thread, not in the accept loop.
        self.httpd.socket = ca.server_context("idp-stub").wrap_socket(
            self.httpd.socket, server_side=True, do_handshake_on_connect=False
        )
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}/introspect"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, token: str, user: str | None) -> dict:
        owner = self.owners.get(token)
        if owner is None:
            return {"active": False}
        senders = " ".join([owner, *sorted(m for m, who in self.send_as.items() if owner in who)])
        if user is None or user.lower() == owner:
            return {"active": True, "username": owner, "send_as": senders}
        if owner in self.delegates.get(user.lower(), set()):
            return {"active": True, "username": user, "send_as": senders}
        return {"active": False}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def idp(ca: TestCA) -> Iterator[IntrospectionStub]:
    stub = IntrospectionStub(ca)
    yield stub
    stub.close()


@pytest.fixture(scope="module")
def dovecot(ca: TestCA, idp: IntrospectionStub) -> Iterator[DovecotServer]:
    # Not under pytest's basetemp (as in conftest): Dovecot's mail processes run as "dovecot" and must
    # traverse the path, and any other pytest run on the machine resets /tmp/pytest-of-<user> to 0700.
    workdir = Path(tempfile.mkdtemp(prefix="connector-dovecot-"))
    server = DovecotServer(workdir, ca, idp.url, shared_mailboxes=[SHARED])
    server.start()
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def smtp(ca: TestCA, idp: IntrospectionStub, dovecot: DovecotServer) -> Iterator[SmtpServer]:
    server = SmtpServer(ca, idp.url, deliver=dovecot.deliver)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def show_log(dovecot: DovecotServer) -> Iterator[None]:
    """Print dovecot.log's tail at teardown: pytest shows it only when the test failed."""
    yield
    print(f"--- {dovecot.log_path} (tail) ---\n{dovecot.log_tail()}")


def imap(dovecot: DovecotServer, ca: TestCA) -> IMAPClient:
    client = IMAPClient("127.0.0.1", dovecot.imap_port, ssl=True, ssl_context=ca.client_context(), timeout=10)
    client._imap.debug = 0  # IMAPClient sets 5, which formats every response (FIELD-NOTES)
    return client


def mail(subject: str, to: str = ALICE, sender: str = "someone@example.net", size: int = 0) -> tuple[str, bytes]:
    msg = EmailMessage()
    msg_id = f"<{secrets.token_hex(8)}@test.invalid>"
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = sender, to, subject, msg_id
    msg.set_content("hello\n" + "x" * size)
    return msg_id, msg.as_bytes()


def fresh_user(name: str) -> str:
    return f"{name}-{secrets.token_hex(4)}@example.com"


# -- IMAP ---------------------------------------------------------------------------------------


def test_imap_xoauth2_good_token_over_tls(dovecot: DovecotServer, ca: TestCA, show_log: None) -> None:
    client = imap(dovecot, ca)
    try:
        assert b"AUTH=XOAUTH2" in client.capabilities()
        client.oauth2_login(ALICE, ALICE_TOKEN)
        assert client.select_folder("INBOX")[b"UIDVALIDITY"] > 0
        assert client._imap.sock.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        client.logout()


def test_imap_bad_token_and_wrong_owner_fail_fast(dovecot: DovecotServer, ca: TestCA, show_log: None) -> None:
    started = time.monotonic()
    for user, token in [(ALICE, "not-a-token"), (BOB, ALICE_TOKEN), (ALICE, "again-wrong")]:
        client = imap(dovecot, ca)
        with pytest.raises(LoginError):
            client.oauth2_login(user, token)
        client.shutdown()
    # auth_failure_delay = 0 and no anvil auth penalty: three failures must not take seconds
    assert time.monotonic() - started < 2.0


def test_imap_shared_mailbox_login_reaches_idp_with_user(
    dovecot: DovecotServer, ca: TestCA, idp: IntrospectionStub, show_log: None
) -> None:
    """Dovecot 2.3 cannot put %u in the URL; shared_mailboxes get a passdb with a fixed ?user=."""
    client = imap(dovecot, ca)
    client.oauth2_login(SHARED, ALICE_TOKEN)  # delegate's token, shared mailbox's name
    client.logout()
    assert (ALICE_TOKEN, SHARED) in idp.requests
    client = imap(dovecot, ca)
    with pytest.raises(LoginError):
        client.oauth2_login(SHARED, BOB_TOKEN)  # no Full Access
    client.shutdown()


def test_imap_delegation_for_any_address_checks_the_login_at_the_idp(
    dovecot: DovecotServer, ca: TestCA, idp: IntrospectionStub, show_log: None
) -> None:
    """A shared mailbox Dovecot was not told about: the password-grant passdb sends login and token."""
    team = fresh_user("team")
    for token in (ALICE_TOKEN, BOB_TOKEN):  # nobody has Full Access yet
        client = imap(dovecot, ca)
        with pytest.raises(LoginError):
            client.oauth2_login(team, token)
        client.shutdown()
    assert (ALICE_TOKEN, team) in idp.grants
    idp.delegates[team] = {ALICE}
    client = imap(dovecot, ca)
    client.oauth2_login(team, ALICE_TOKEN)
    dovecot.deliver(team, mail("for the team", to=team)[1])
    assert client.select_folder("INBOX")[b"EXISTS"] == 1  # the shared mailbox, not Alice's
    client.logout()
    client = imap(dovecot, ca)
    with pytest.raises(LoginError):
        client.oauth2_login(team, BOB_TOKEN)
    client.shutdown()
    del idp.delegates[team]  # Remove-MailboxPermission: the next sign-in fails
    client = imap(dovecot, ca)
    with pytest.raises(LoginError):
        client.oauth2_login(team, ALICE_TOKEN)
    client.shutdown()


def test_plain_port_is_plaintext_and_would_accept_auth(dovecot: DovecotServer) -> None:
    """Dovecot trusts loopback, so only the client can refuse to authenticate here."""
    client = IMAPClient("127.0.0.1", dovecot.imap_plain_port, ssl=False, timeout=10)
    try:
        caps = client.capabilities()
        assert b"STARTTLS" in caps and b"AUTH=XOAUTH2" in caps
        assert not isinstance(client._imap.sock, ssl.SSLSocket)
    finally:
        client.logout()


def test_lmtp_delivery_shows_up(dovecot: DovecotServer, ca: TestCA, show_log: None) -> None:
    user = fresh_user("lmtp")
    msg_id, raw = mail("via lmtp", to=user)
    dovecot.deliver(user, raw)
    [stored] = dovecot.messages(user)
    assert stored["message_id"] == msg_id and stored["flags"] == [] and stored["size"] > 0

    dovecot.deliver(user, mail("archived", to=user)[1], folder="Archive/2024")
    assert "Archive/2024" in dovecot.folders(user)
    assert {"INBOX", "Sent Items", "Deleted Items", "Drafts", "Junk Email", "Archive"} <= set(dovecot.folders(user))
    assert len(dovecot.messages(user, "Archive/2024")) == 1


def test_messages_follow_imap_changes(
    dovecot: DovecotServer, ca: TestCA, idp: IntrospectionStub, show_log: None
) -> None:
    user = fresh_user("flags")
    token = "tok-" + secrets.token_hex(8)
    idp.owners[token] = user
    for i in range(3):
        dovecot.deliver(user, mail(f"m{i}", to=user)[1])
    client = imap(dovecot, ca)
    client.oauth2_login(user, token)
    client.select_folder("INBOX")
    uids = client.search("ALL")
    client.add_flags([uids[0]], [b"\\Seen"])
    client.move([uids[1]], "Deleted Items")
    client.delete_messages([uids[2]])
    client.expunge()
    client.logout()
    inbox = dovecot.messages(user)
    assert [(m["uid"], m["flags"]) for m in inbox] == [(uids[0], ["\\Seen"])]
    assert len(dovecot.messages(user, "Deleted Items")) == 1


def test_idle_gets_exists_within_a_second(
    dovecot: DovecotServer, ca: TestCA, idp: IntrospectionStub, show_log: None
) -> None:
    user = fresh_user("idle")
    token = "tok-" + secrets.token_hex(8)
    idp.owners[token] = user
    client = imap(dovecot, ca)
    client.oauth2_login(user, token)
    client.select_folder("INBOX")
    client.idle()
    try:
        dovecot.deliver(user, mail("push", to=user)[1])
        delivered = time.monotonic()
        responses = client.idle_check(timeout=1.0)
        latency = time.monotonic() - delivered
    finally:
        client.idle_done()
        client.logout()
    assert (1, b"EXISTS") in responses, f"no EXISTS within 1 s (got {responses})"
    assert latency < 1.0


def test_reset_uidvalidity_keeps_messages(
    dovecot: DovecotServer, ca: TestCA, idp: IntrospectionStub, show_log: None
) -> None:
    user = fresh_user("uidv")
    token = "tok-" + secrets.token_hex(8)
    idp.owners[token] = user
    for i in range(2):
        dovecot.deliver(user, mail(f"m{i}", to=user)[1])
    before = dovecot.messages(user)
    client = imap(dovecot, ca)
    client.oauth2_login(user, token)
    old = client.select_folder("INBOX")[b"UIDVALIDITY"]
    client.logout()

    new = dovecot.reset_uidvalidity(user)

    client = imap(dovecot, ca)
    client.oauth2_login(user, token)
    selected = client.select_folder("INBOX")
    client.logout()
    assert selected[b"UIDVALIDITY"] == new != old
    assert selected[b"EXISTS"] == 2
    assert [m["message_id"] for m in dovecot.messages(user)] == [m["message_id"] for m in before]


def test_kick_cuts_connections(dovecot: DovecotServer, ca: TestCA, idp: IntrospectionStub) -> None:
    user = fresh_user("kick")
    token = "tok-" + secrets.token_hex(8)
    idp.owners[token] = user
    client = imap(dovecot, ca)
    client.oauth2_login(user, token)
    client.select_folder("INBOX")
    dovecot.kick(user)
    with pytest.raises((OSError, client.AbortError, client.Error)):
        for _ in range(20):  # the BYE arrives asynchronously
            client.noop()
            time.sleep(0.05)
    dovecot.kick("nobody-connected@example.com")  # no error when nobody is connected


def test_many_sessions_share_imap_processes(dovecot: DovecotServer, ca: TestCA, idp: IntrospectionStub) -> None:
    """The 1,000-mailbox benchmark relies on service_count=0 + client_limit: not one process each
    (that would also exhaust fs.inotify.max_user_instances and turn IDLE push into polling)."""
    clients = []
    try:
        for i in range(40):
            user = f"many-{i}@example.com"
            idp.owners[f"many-token-{i}"] = user
            client = imap(dovecot, ca)
            client.oauth2_login(user, f"many-token-{i}")
            client.select_folder("INBOX")
            clients.append(client)
        sessions = [s for s in json.loads(dovecot.doveadm("-f", "json", "who", "-1")) if s["username"].startswith("many-")]
        assert len(sessions) == 40
        assert len({s["pid"] for s in sessions}) <= 4
    finally:
        for client in clients:
            client.logout()


def test_restart_keeps_mail_and_ports(dovecot: DovecotServer, ca: TestCA, show_log: None) -> None:
    user = fresh_user("restart")
    msg_id, raw = mail("survives", to=user)
    dovecot.deliver(user, raw)
    port = dovecot.imap_port
    dovecot.restart()
    assert dovecot.imap_port == port
    assert [m["message_id"] for m in dovecot.messages(user)] == [msg_id]
    client = imap(dovecot, ca)
    client.oauth2_login(ALICE, ALICE_TOKEN)
    client.logout()


# -- SMTP ---------------------------------------------------------------------------------------


def xoauth2(user: str, token: str) -> str:
    return base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()


def smtp_tls(smtp: SmtpServer, ca: TestCA) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", smtp.port, timeout=10)
    client.ehlo()
    client.starttls(context=ca.client_context())
    client.ehlo()
    return client


def test_smtp_auth_before_starttls_refused(smtp: SmtpServer) -> None:
    with socket.create_connection(("127.0.0.1", smtp.port), timeout=5) as sock:
        f = sock.makefile("rwb")
        assert f.readline().startswith(b"220 ")
        f.write(b"EHLO client\r\n")
        f.flush()
        ehlo = []
        while not (line := f.readline()).startswith(b"250 "):
            ehlo.append(line)
        assert any(b"STARTTLS" in line for line in ehlo) and not any(b"AUTH" in line for line in ehlo)
        f.write(f"AUTH XOAUTH2 {xoauth2(ALICE, ALICE_TOKEN)}\r\n".encode())
        f.flush()
        assert f.readline().rstrip() == b"530 5.7.0 Must issue a STARTTLS command first"


def test_smtp_xoauth2_long_token_with_aiosmtplib_and_delivery(
    smtp: SmtpServer, dovecot: DovecotServer, ca: TestCA, show_log: None
) -> None:
    rcpt = fresh_user("smtp-rcpt")
    msg_id, raw = mail("through smtp", to=rcpt, sender=ALICE)
    auths = smtp.auth_count

    async def send() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp.port, start_tls=True, tls_context=ca.client_context())
        await client.connect()
        await client.auth_xoauth2(ALICE, LONG_TOKEN)
        await client.sendmail(ALICE, [rcpt], raw)
        await client.sendmail(ALICE, [rcpt], raw)  # same connection, no second AUTH
        await client.quit()

    assert len(xoauth2(ALICE, LONG_TOKEN)) > 3500
    asyncio.run(send())
    assert smtp.auth_count == auths + 1
    assert smtp.received[-1].auth_login == ALICE and smtp.received[-1].rcpt_tos == [rcpt]
    assert [m["message_id"] for m in dovecot.messages(rcpt)] == [msg_id, msg_id]


def test_smtp_xoauth2_after_334_prompt(smtp: SmtpServer, ca: TestCA) -> None:
    client = smtp_tls(smtp, ca)
    assert "XOAUTH2" in client.esmtp_features["auth"]
    code, _ = client.docmd("AUTH", "XOAUTH2")
    assert code == 334
    code, text = client.docmd(xoauth2(ALICE, LONG_TOKEN))
    assert (code, text) == (235, b"2.7.0 Authentication successful")
    client.quit()


def test_smtp_bad_token_and_send_as(smtp: SmtpServer, ca: TestCA) -> None:
    client = smtp_tls(smtp, ca)
    assert client.docmd("AUTH", f"XOAUTH2 {xoauth2(ALICE, 'forged')}") == (535, b"5.7.3 Authentication unsuccessful")
    assert client.docmd("AUTH", f"XOAUTH2 {xoauth2(BOB, ALICE_TOKEN)}")[0] == 535
    assert client.docmd("AUTH", f"XOAUTH2 {xoauth2(ALICE, ALICE_TOKEN)}")[0] == 235
    with pytest.raises(smtplib.SMTPDataError) as denied:
        client.sendmail(BOB, [ALICE], mail("spoof", sender=BOB)[1])
    assert denied.value.smtp_code == 554 and b"SendAsDenied" in denied.value.smtp_error
    client.quit()


def test_smtp_delegate_needs_full_access_to_sign_in_and_send_as_to_send(
    smtp: SmtpServer, ca: TestCA, idp: IntrospectionStub
) -> None:
    """Exchange: Full Access lets the delegate sign in as the shared mailbox; sending from it needs Send As."""
    client = smtp_tls(smtp, ca)
    assert client.docmd("AUTH", f"XOAUTH2 {xoauth2(SHARED, BOB_TOKEN)}")[0] == 535  # no Full Access
    assert client.docmd("AUTH", f"XOAUTH2 {xoauth2(SHARED, ALICE_TOKEN)}")[0] == 235
    with pytest.raises(smtplib.SMTPDataError) as denied:
        client.sendmail(SHARED, [BOB], mail("from the team", sender=SHARED)[1])
    assert denied.value.smtp_code == 554 and b"SendAsDenied" in denied.value.smtp_error
    client.quit()
    idp.send_as[SHARED] = {ALICE}
    try:
        client = smtp_tls(smtp, ca)
        assert client.docmd("AUTH", f"XOAUTH2 {xoauth2(SHARED, ALICE_TOKEN)}")[0] == 235
        assert client.sendmail(SHARED, [BOB], mail("from the team", sender=SHARED)[1]) == {}
        client.quit()
        assert smtp.received[-1].auth_login == SHARED and smtp.received[-1].mail_from == SHARED
    finally:
        del idp.send_as[SHARED]


@pytest.mark.parametrize(
    "stage, code, message",
    [
        ("auth", 535, "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant."),
        ("mail", 451, "4.3.0 Temporary server error. Please try again later."),
        ("rcpt", 550, "5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"),
        ("data", 554, "5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied"),
    ],
)
def test_smtp_fail_next(smtp: SmtpServer, ca: TestCA, stage: str, code: int, message: str) -> None:
    smtp.fail_next(code, message, stage=stage)
    raw = mail("fail next", sender=ALICE)[1]
    client = smtp_tls(smtp, ca)
    got = client.docmd("AUTH", f"XOAUTH2 {xoauth2(ALICE, ALICE_TOKEN)}")
    if stage == "auth":
        assert got == (code, message.encode())
        got = client.docmd("AUTH", f"XOAUTH2 {xoauth2(ALICE, ALICE_TOKEN)}")
    assert got[0] == 235
    if stage != "auth":
        with pytest.raises(smtplib.SMTPException) as failed:
            client.sendmail(ALICE, [BOB], raw)
        error = failed.value
        if isinstance(error, smtplib.SMTPRecipientsRefused):
            error_code, error_text = error.recipients[BOB]
        else:
            error_code, error_text = error.smtp_code, error.smtp_error
        assert (error_code, error_text) == (code, message.encode())
    assert client.sendmail(ALICE, [BOB], raw) == {}  # only the next attempt failed
    client.quit()


def test_smtp_size_limit_and_restart(smtp: SmtpServer, ca: TestCA) -> None:
    client = smtp_tls(smtp, ca)
    assert client.docmd("AUTH", f"XOAUTH2 {xoauth2(ALICE, ALICE_TOKEN)}")[0] == 235
    code, text = client.docmd("MAIL", f"FROM:<{ALICE}> SIZE={36 * 1024 * 1024}")
    assert (code, text) == (552, b"5.3.4 Message size exceeds fixed maximum message size")
    client.quit()
    port = smtp.port
    smtp.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    smtp.start()
    assert smtp.port == port
    client = smtp_tls(smtp, ca)
    client.quit()
