"""The real servers a fault campaign runs against, each one restartable on its own port with its state kept.

The test identity provider and the SMTP server run in this (the harness's) process, as threads; Dovecot
and PostgreSQL are processes. The product runs in other processes (`connector worker`, `connector
serve`), so killing it never touches them. Restarting a server keeps what a real one keeps on disk: the
IdP its directory, grants and signing key; Dovecot its mail; PostgreSQL its data.
"""
from __future__ import annotations

import collections
import logging
import shutil
import tempfile
import threading
import time
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Callable

from tests.idp import IdentityProvider
from tests.servers.dovecot import DovecotServer, dovecot_available
from tests.servers.smtp import Received, SmtpServer
from tests.support.tls import TestCA

DOMAIN = "faults.test"
CLIENT_SECRET = "faults-client-secret"


class World:
    """IdP + Dovecot + SMTP for one campaign, with one tenant and one app registration at the IdP."""

    def __init__(self, workdir: Path | None = None) -> None:
        # Not under pytest's basetemp: as root Dovecot's mail processes run as "dovecot" and must traverse
        # the path, and another pytest run may reset /tmp/pytest-of-root to 0700.
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="connector-faults-"))
        self._own_workdir = workdir is None
        self.ca: TestCA | None = None
        self.idp: IdentityProvider | None = None
        self.dovecot: DovecotServer | None = None
        self.smtp: SmtpServer | None = None
        self.tenant = None
        self.app = None
        self._smtp_lock = threading.Lock()
        self._data_hooks: list[Callable[[Received], None]] = []
        self.submissions: list[tuple[float, str]] = []  # (time.monotonic(), Message-ID) of each accepted DATA

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> "World":
        # aiosmtpd logs every session a killed client left half-way (TLS setup, DATA) with a traceback
        logging.getLogger("mail.log").setLevel(logging.CRITICAL)
        if not dovecot_available():
            raise RuntimeError("Dovecot is not installed (apt-get install dovecot-imapd dovecot-lmtpd)")
        self.ca = TestCA(self.workdir / "ca")
        self.idp = IdentityProvider(self.ca).start()
        self.tenant = self.idp.add_tenant(DOMAIN)
        self.app = self.idp.add_app(self.tenant, secret=CLIENT_SECRET, redirect_uris=[])
        self.idp.grant_admin_consent(self.tenant, self.app)
        self.dovecot = DovecotServer(self.workdir / "dovecot", self.ca, f"{self.idp.url}/introspect")
        self.dovecot.start()
        # Replies go to customers outside: only the sender's copy in Sent Items is kept, as Exchange files it.
        self.smtp = SmtpServer(self.ca, f"{self.idp.url}/introspect", deliver=None,
                               save_sent=lambda login, raw: self.dovecot.deliver(login, raw, folder="Sent Items"))
        self.smtp.on_data = self._on_data
        self.smtp.start()
        return self

    def stop(self) -> None:
        for server in (self.smtp, self.dovecot, self.idp):
            if server is not None:
                try:
                    server.stop()
                except Exception:  # noqa: BLE001 - stop the others anyway
                    pass
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "World":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the app registration and people ----------------------------------------------------------------
    @property
    def client_id(self) -> str:
        return self.app.client_id

    @property
    def tenant_id(self) -> str:
        return self.tenant.tenant_id

    def allow_callback(self, url: str) -> None:
        """Register another installation's callback URL with the app (each `connector serve` has its own port)."""
        with self.idp.lock:
            if url not in self.app.redirect_uris:
                self.app.redirect_uris.append(url)

    def add_mailbox(self, local: str) -> str:
        address = f"{local}@{DOMAIN}"
        if address not in self.idp.users:
            self.idp.add_user(self.tenant, address, password="pw")
        return address

    # -- restarts ---------------------------------------------------------------------------------------------
    def restart_idp(self, down_seconds: float = 0.0) -> None:
        """Same port, directory, grants and signing key; requests during the gap are refused."""
        self.idp.stop()
        time.sleep(down_seconds)
        _retry_bind(self.idp.start)

    def restart_dovecot(self, down_seconds: float = 0.0) -> None:
        """Every IMAP connection drops; mail, UIDs and UIDVALIDITY stay."""
        self.dovecot.stop()
        time.sleep(down_seconds)
        self.dovecot.start()

    def restart_smtp(self, down_seconds: float = 0.0) -> None:
        """Open sessions are cut (a message whose 250 was not written yet gets none)."""
        self.smtp.stop()
        time.sleep(down_seconds)
        _retry_bind(self.smtp.start)

    # -- what the SMTP server saw -------------------------------------------------------------------------------
    def add_data_hook(self, hook: Callable[[Received], None]) -> Callable[[], None]:
        """Call `hook(received)` when a message's DATA is complete, before its 250; returns the remover."""
        with self._smtp_lock:
            self._data_hooks.append(hook)

        def remove() -> None:
            with self._smtp_lock:
                if hook in self._data_hooks:
                    self._data_hooks.remove(hook)
        return remove

    def _on_data(self, received: Received) -> None:
        with self._smtp_lock:
            self.submissions.append((time.monotonic(), message_id_of(received.raw)))
            hooks = list(self._data_hooks)
        for hook in hooks:
            hook(received)

    def submitted(self) -> collections.Counter[str]:
        """How often the SMTP server accepted each Message-ID."""
        counter: collections.Counter[str] = collections.Counter()
        for received in list(self.smtp.received):
            counter[message_id_of(received.raw)] += 1
        return counter

    def imap_logins(self, address: str) -> int:
        """How many IMAP sessions Dovecot has opened for the mailbox (its log's "Login: user=<...>" lines)."""
        try:
            text = self.dovecot.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return text.count(f"Login: user=<{address.lower()}>")

    def sent_items(self, address: str) -> set[str]:
        """The Message-IDs in the mailbox's Sent Items (what the server filed for the sender)."""
        if "Sent Items" not in self.dovecot.folders(address):
            return set()
        return {m["message_id"] for m in self.dovecot.messages(address, "Sent Items")}


def message_id_of(raw: bytes) -> str:
    return str(BytesHeaderParser().parsebytes(raw).get("Message-ID", "")).strip()


def _retry_bind(start: Callable[[], object], timeout: float = 10.0) -> None:
    """Start a server on its old port, which the kernel may hold for a moment after the close."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            start()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)

