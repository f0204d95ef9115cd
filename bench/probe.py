"""Measuring new-mail latency: submit over SMTP, watch the REST API, and a raw IMAP IDLE reference."""
from __future__ import annotations

import base64
import smtplib
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from .env import ROOT, BenchEnv
from tests.support.net import free_port, wait_for_port


class Submitter:
    """One SMTP submission connection (STARTTLS, AUTH XOAUTH2) as a customer; `send` returns the
    time the server accepted the mail (its 250 after DATA, i.e. after delivery into Dovecot)."""

    def __init__(self, host: str, port: int, login: str, token: str, ca_path: Path) -> None:
        self.login, self.token = login, token
        self.smtp = smtplib.SMTP(host, port, timeout=60)
        self.smtp.ehlo()
        self.smtp.starttls(context=ssl.create_default_context(cafile=str(ca_path)))
        self.smtp.ehlo()
        blob = base64.b64encode(f"user={login}\x01auth=Bearer {token}\x01\x01".encode()).decode()
        code, reply = self.smtp.docmd("AUTH", f"XOAUTH2 {blob}")
        if code != 235:
            raise RuntimeError(f"SMTP AUTH failed: {code} {reply!r}")

    def send(self, to: list[str], raw: bytes) -> float:
        self.smtp.sendmail(self.login, to, raw)
        return time.perf_counter()

    def close(self) -> None:
        try:
            self.smtp.quit()
        except Exception:  # noqa: BLE001
            pass


class Server:
    """`connector serve` (or `serve --no-worker`) as a subprocess on a free port."""

    def __init__(self, env: BenchEnv, log_path: Path, *, worker: bool = True, extra_env: dict | None = None) -> None:
        self.port = free_port()
        args = [sys.executable, "-m", "connector.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        if not worker:
            args.append("--no-worker")
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(args, env=env.env(**(extra_env or {})), cwd=ROOT, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        wait_for_port(self.port, timeout=60)
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.headers["Authorization"] = f"Bearer {env.api_token}"

    def get(self, path: str, **params):
        response = self.http.get(self.url + path, params=params, timeout=30)
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class ApiWatcher(threading.Thread):
    """Polls GET /api/v1/tickets (first page, newest activity first) and records when each awaited
    subject is first listed."""

    def __init__(self, server: Server, interval: float = 0.02) -> None:
        super().__init__(daemon=True, name="api-watcher")
        self.server, self.interval = server, interval
        self.awaited: set[str] = set()
        self.seen: dict[str, float] = {}
        self.polls = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._halt = threading.Event()

    def expect(self, subject: str) -> None:
        with self._lock:
            self.awaited.add(subject)

    def run(self) -> None:
        while not self._halt.is_set():
            with self._lock:
                pending = self.awaited - self.seen.keys()
            if pending:
                try:
                    items = self.server.get("/api/v1/tickets")["items"]
                except Exception:  # noqa: BLE001 - a busy server: count it, poll again
                    self.errors += 1
                    items = []
                now = time.perf_counter()
                self.polls += 1
                with self._lock:
                    for item in items:
                        if item["subject"] in pending and item["subject"] not in self.seen:
                            self.seen[item["subject"]] = now
            self._halt.wait(self.interval)

    def wait_all(self, subjects, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if all(s in self.seen for s in subjects):
                    return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


class IdleWatcher(threading.Thread):
    """Reference: a plain IMAPClient in IDLE on the mailbox; records when EXISTS reaches each count."""

    def __init__(self, env: BenchEnv, address: str, token: str) -> None:
        super().__init__(daemon=True, name="idle-watcher")
        import imapclient

        from connector.mail.imap import tls_context

        self.client = imapclient.IMAPClient("127.0.0.1", port=env.dovecot.imap_port, ssl=True,
                                            ssl_context=tls_context(str(env.ca.ca_path)), timeout=60)
        self.client._imap.debug = 0
        self.client.oauth2_login(address, token)
        info = self.client.select_folder("INBOX", readonly=True)
        self.start_count = int(info.get(b"EXISTS", 0))
        self.at: dict[int, float] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        self.client.idle()
        try:
            while not self._halt.is_set():
                for response in self.client.idle_check(timeout=0.5):
                    if len(response) >= 2 and response[1] == b"EXISTS":
                        now = time.perf_counter()
                        for n in range(self.start_count + 1, int(response[0]) + 1):
                            self.at.setdefault(n, now)
        finally:
            try:
                self.client.idle_done()
                self.client.logout()
            except Exception:  # noqa: BLE001
                pass

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
