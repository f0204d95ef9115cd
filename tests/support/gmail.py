"""smtp.gmail.com and Gmail's folders beside the Gmail-like Dovecot (tests/google/dovecot.py).

- `GmailSmtp`: the project's aiosmtpd submission server (tests/servers/smtp.py: STARTTLS required,
  AUTH XOAUTH2 only), but checking the bearer token as Gmail does: at the Google stand-in's tokeninfo
  (the token must be live, carry https://mail.google.com/, and belong to the SASL login); a mail is
  delivered to Gmail-like mailboxes over LMTP and filed in the sender's "[Gmail]/Sent Mail", as
  Gmail files everything sent through smtp.gmail.com.
- `doveadm(server, ...)`, `messages(server, address, folder)`, `save(server, address, raw, folder)`:
  look into and file into the Gmail-like Dovecot's folders.

Fixture: `gmail_smtp` (session) on `gmail_dovecot` and `google`.
"""
from __future__ import annotations

import json
import subprocess

import pytest
import requests

from tests.google import scopes as scope_rules
from tests.servers.smtp import SignedIn, SmtpServer

SENT_MAIL = "[Gmail]/Sent Mail"


def doveadm(server, *args: str, stdin: bytes = b"") -> str:
    result = subprocess.run(["doveadm", "-c", str(server.conf_path), *args], input=stdin, capture_output=True,
                            timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"doveadm {' '.join(args)}: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout.decode(errors="replace")


def messages(server, address: str, folder: str = "INBOX") -> list[dict]:
    """[{uid, message_id, flags}] of a folder of a Gmail-like mailbox, by uid."""
    out = doveadm(server, "-f", "json", "fetch", "-u", address, "uid flags hdr.message-id", "mailbox", folder,
                  "all")
    rows = json.loads(out) if out.strip() else []
    return sorted(({"uid": int(r["uid"]), "message_id": r.get("hdr.message-id", "").strip(),
                    "flags": [f for f in r.get("flags", "").split() if f != "\\Recent"]} for r in rows),
                  key=lambda m: m["uid"])


def save(server, address: str, raw: bytes, folder: str) -> None:
    doveadm(server, "save", "-u", address, "-m", folder, stdin=raw)


class GmailSmtp(SmtpServer):
    """See the module doc; `tokeninfo_url` is the stand-in's `<issuer>/tokeninfo`."""

    def __init__(self, ca, tokeninfo_url: str, dovecot) -> None:
        super().__init__(ca, tokeninfo_url, deliver=lambda rcpt, raw: dovecot.deliver(rcpt, raw),
                         save_sent=lambda login, raw: save(dovecot, login, raw, SENT_MAIL))

    def _token_valid(self, login: str, token: str) -> SignedIn | bool | None:
        try:
            # POSTed, so the token is in no URL (urllib3 logs URLs at DEBUG: tests/test_log_secrets_google.py)
            response = self._http.post(self.introspection_url, data={"access_token": token},
                                       verify=str(self.ca.ca_path), timeout=10)
        except requests.RequestException:
            return None
        if response.status_code >= 500:
            return None
        if response.status_code != 200:
            return False  # 400 {"error": "invalid_token"}: expired or revoked
        info = response.json()
        if str(info.get("email", "")).lower() != login.lower() or \
                scope_rules.MAIL not in str(info.get("scope", "")).split():
            return False
        return SignedIn(login, frozenset([login.lower()]))  # Gmail: send as the account itself


@pytest.fixture(scope="session")
def gmail_smtp(ca, google, gmail_dovecot):
    server = GmailSmtp(ca, f"{google.url}/tokeninfo", gmail_dovecot)
    server.start()
    yield server
    server.stop()
