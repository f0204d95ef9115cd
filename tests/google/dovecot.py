"""A private Dovecot 2.3 standing in for imap.gmail.com: IMAP over TLS, SASL XOAUTH2 checked
at the Google stand-in's tokeninfo endpoint, Gmail's folder names, LMTP delivery.

How Dovecot 2.3.19 checks the token (src/auth/db-oauth2.c, src/lib-oauth2/oauth2-request.c):
- mode "tokeninfo" (Dovecot's documented Google example, `tokeninfo_url = ...?access_token=`):
  Dovecot appends the token; a 2xx answer is valid, a 4xx answer is "Invalid token", a password
  mismatch: IMAP answers `NO [AUTHENTICATIONFAILED]`.
- mode "introspection" (`introspection_mode = get`, `introspection_url = ...?access_token=`):
  Dovecot appends the token plus `&client_id=&client_secret=`, but ignores the HTTP status of
  the answer and reads its fields; Google's 400 `{"error": "invalid_token"}` has no `email`, so
  Dovecot fails with "No username returned" as an internal failure: IMAP answers
  `NO [UNAVAILABLE] Temporary authentication failure`, which a client would retry. Prefer the
  tokeninfo mode for Gmail-like mailboxes.
In both modes `username_attribute = email` must equal the SASL login (both lower-cased) and
`scope = https://mail.google.com/` must be among the token's scopes, as Gmail requires.
"""
from __future__ import annotations

import getpass
import grp
import os
import pwd
import shutil
import signal
import smtplib
import stat
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Literal

from tests.support.net import free_ports, wait_for_port
from tests.support.tls import TestCA

from . import scopes as scope_rules

Mode = Literal["tokeninfo", "introspection"]

# Gmail's IMAP folders and their special-use flags (RFC 6154), as imap.gmail.com lists them.
GMAIL_FOLDERS = {
    "[Gmail]/All Mail": r"\All",
    "[Gmail]/Drafts": r"\Drafts",
    "[Gmail]/Important": r"\Important",
    "[Gmail]/Sent Mail": r"\Sent",
    "[Gmail]/Spam": r"\Junk",
    "[Gmail]/Starred": r"\Flagged",
    "[Gmail]/Trash": r"\Trash",
}


def dovecot_available() -> bool:
    return shutil.which("dovecot") is not None


class GmailDovecot:
    """One private instance under `workdir` (which mail processes must be able to traverse)."""

    def __init__(self, workdir: Path, ca: TestCA, issuer: str, mode: Mode = "tokeninfo") -> None:
        self.workdir = Path(workdir).resolve()
        self.ca = ca
        self.url = f"{issuer}/tokeninfo?access_token="
        self.mode = mode
        self.instance_name = f"connector-gmail-{uuid.uuid4().hex[:8]}"
        self.imap_port, self.lmtp_port = free_ports(2)
        self.conf_path = self.workdir / "dovecot.conf"
        self.log_path = self.workdir / "dovecot.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "GmailDovecot":
        uid, gid, login_user, internal_user = _identity()
        for sub in ("run", "state", "mail"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(self.workdir / "mail", uid, gid)
            _make_traversable(self.workdir)
        self._write_config(uid, gid, login_user, internal_user)
        with open(self.workdir / "dovecot.stdout", "ab") as out:
            self._proc = subprocess.Popen([*_die_with_parent(), "dovecot", "-F", "-c",
                                           str(self.conf_path)],
                                          stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        try:
            for port in (self.imap_port, self.lmtp_port):
                wait_for_port(port, timeout=15)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"dovecot did not start:\n{self.log_tail()}") from None
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of our own process group only
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(timeout=5)

    def __enter__(self) -> "GmailDovecot":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def deliver(self, address: str, raw: bytes, mail_from: str = "sender@test.invalid") -> None:
        """Into INBOX over LMTP, as Gmail's MX would."""
        with smtplib.LMTP("127.0.0.1", self.lmtp_port, timeout=30) as lmtp:
            refused = lmtp.sendmail(mail_from, [address], raw)
        if refused:
            raise RuntimeError(f"LMTP refused {address}: {refused}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no dovecot.log yet)"

    def _oauth2_conf(self, ca_copy: Path) -> str:
        check = (f"tokeninfo_url = {self.url}\n" if self.mode == "tokeninfo" else
                 f"introspection_mode = get\nintrospection_url = {self.url}\n"
                 "force_introspection = yes\n")
        # tokeninfo has no "active" field: switch off Dovecot's default active_attribute check
        return (f"{check}username_attribute = email\nscope = {scope_rules.MAIL}\n"
                f"active_attribute =\nactive_value =\ntls_ca_cert_file = {ca_copy}\n"
                "timeout_msecs = 10000\n")

    def _write_config(self, uid: int, gid: int, login_user: str, internal_user: str) -> None:
        cert = self.ca.issue(self.instance_name)
        ca_copy = self.workdir / "google-ca.pem"  # the auth process reads it as internal user
        shutil.copyfile(self.ca.ca_path, ca_copy)
        ca_copy.chmod(0o644)
        oauth2 = self.workdir / "oauth2.conf.ext"
        oauth2.write_text(self._oauth2_conf(ca_copy))
        group = grp.getgrgid(pwd.getpwnam(internal_user).pw_gid).gr_name
        self.conf_path.write_text(_dovecot_conf(self, oauth2, cert.cert_path, cert.key_path,
                                                (uid, gid, login_user, internal_user, group)))


def _dovecot_conf(server: GmailDovecot, oauth2: Path, cert_path: Path, key_path: Path,
                  ids: tuple[int, int, str, str, str]) -> str:
    uid, gid, login_user, internal_user, group = ids
    folders = "\n".join(f'  mailbox "{name}" {{\n    special_use = {use}\n    auto = subscribe\n'
                        "  }" for name, use in GMAIL_FOLDERS.items())
    return f"""\
# Generated by tests/google/dovecot.py: a Gmail-like IMAP server on 127.0.0.1 only.
instance_name = {server.instance_name}
base_dir = {server.workdir / "run"}
state_dir = {server.workdir / "state"}
listen = 127.0.0.1
protocols = imap lmtp
log_path = {server.log_path}
auth_verbose = yes
default_login_user = {login_user}
default_internal_user = {internal_user}
default_internal_group = {group}
first_valid_uid = 1
first_valid_gid = 1
mail_uid = {uid}
mail_gid = {gid}
ssl = required
ssl_cert = <{cert_path}
ssl_key = <{key_path}
auth_mechanisms = xoauth2 oauthbearer
auth_cache_size = 0
auth_failure_delay = 0
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {oauth2}
}}
userdb {{
  driver = static
  args = home={server.workdir / "mail"}/%u allow_all_users=yes
}}
mail_location = maildir:~/Maildir:LAYOUT=fs
mail_fsync = never
namespace inbox {{
  inbox = yes
  separator = /
{folders}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {server.imap_port}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {server.lmtp_port}
  }}
}}
service anvil {{
  chroot =
  # mode 0: the auth process cannot reach the penalty socket, so failed logins are not delayed
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
protocol lmtp {{
  postmaster_address = postmaster@test.invalid
}}
"""


def _identity() -> tuple[int, int, str, str]:
    """(mail uid, mail gid, login user, internal user): Dovecot refuses mail access as root."""
    if os.geteuid() == 0:
        pw = pwd.getpwnam("dovecot")
        login = "dovenull" if _user_exists("dovenull") else "dovecot"
        return pw.pw_uid, pw.pw_gid, login, "dovecot"
    user = getpass.getuser()
    return os.getuid(), os.getgid(), user, user


def _die_with_parent() -> list[str]:
    """`setpriv --pdeathsig TERM`: dovecot stops even if the test process is killed. Linux
    signals when the forking *thread* exits, so only from the main thread."""
    if threading.current_thread() is threading.main_thread() and shutil.which("setpriv"):
        return ["setpriv", "--pdeathsig", "TERM", "--"]
    return []


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _make_traversable(path: Path) -> None:
    """As root, mail processes run as `dovecot` and must reach workdir/mail: add o+x."""
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(directory, stat.S_IMODE(mode) | stat.S_IXOTH)

