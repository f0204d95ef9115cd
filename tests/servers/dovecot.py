"""A private Dovecot 2.3 that stands in for outlook.office365.com in the integration tests.

Real IMAP over TLS with SASL XOAUTH2/OAUTHBEARER checked by token introspection, real LMTP
delivery, real maildirs: the app is tested against a server that behaves like one, not a mock.

Dovecot 2.3 does NOT expand variables such as %u in `introspection_url` (a literal `%u` even
crashes the auth process), so the login name cannot be put in the URL per request. Instead the
IdP answers with the token owner's name and Dovecot refuses the login when that name differs from
the SASL login (case-insensitively: both sides go through `%Lu`).

Delegation (a delegate's token, the shared mailbox's address as `user=`), as Exchange checks Full
Access at AUTHENTICATE: when the owner check fails, a second oauth2 passdb in password-grant mode
(`use_grant_password`) posts `username=<login>&password=<token>` to `<introspection_url>/grant`,
the one request in which Dovecot 2.3 sends the login name with the token; the IdP answers for that
login (own mailbox, or Full Access granted), so any address works and a removed permission bites at
the next sign-in. `shared_mailboxes` still get a passdb of their own, selected by `username_filter`,
whose introspection URL carries a fixed `?user=<login>` (the plain introspection path for them).
"""
from __future__ import annotations

import atexit
import getpass
import grp
import json
import os
import pwd
import shutil
import signal
import smtplib
import stat
import subprocess
import threading
import time
import uuid
import weakref
from pathlib import Path
from typing import Iterable
from urllib.parse import quote

from tests.support.net import free_ports, wait_for_port
from tests.support.tls import TestCA

DOVECOT = "dovecot"
DOVEADM = "doveadm"

# Folders Exchange Online creates in every mailbox, with the special-use flags it announces.
EXCHANGE_FOLDERS = {
    "Archive": r"\Archive",
    "Deleted Items": r"\Trash",
    "Drafts": r"\Drafts",
    "Junk Email": r"\Junk",
    "Sent Items": r"\Sent",
}

# Sizing for ~1,000 concurrent IMAP connections (a benchmark connects 1,000 mailboxes).
IMAP_LOGIN_CLIENT_LIMIT = 1000  # per imap-login process (high-performance mode, service_count=0)
IMAP_LOGIN_MIN_AVAIL = 4  # imap-login processes kept running; each proxies TLS for its clients
IMAP_CLIENT_LIMIT = 20  # IMAP sessions per imap process (all users share one uid, so allowed)
IMAP_PROCESS_LIMIT = 150  # 150 x 20 = 3,000 sessions; ~50 processes for 1,000 connections
DEFAULT_CLIENT_LIMIT = 5000  # log, anvil, stats, auth, config: one client per process or login
DEFAULT_VSZ_LIMIT = "1G"
MAX_USERIP_CONNECTIONS = 100000


class DoveadmError(RuntimeError):
    """A doveadm command failed; the message carries its stderr."""


def dovecot_available() -> bool:
    return shutil.which(DOVECOT) is not None and shutil.which(DOVEADM) is not None


_running: "weakref.WeakSet[DovecotServer]" = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    """No stray dovecot after the test run, whatever the tests forgot."""
    for server in list(_running):
        server.stop()


class DovecotServer:
    """One private Dovecot instance: its own config, base_dir, state_dir, ports and mail under workdir."""

    def __init__(
        self,
        workdir: Path,
        ca: TestCA,
        introspection_url: str,
        *,
        shared_mailboxes: Iterable[str] = (),
        debug: bool = False,
    ) -> None:
        if "%" in introspection_url:
            raise ValueError(
                "Dovecot 2.3 does not expand variables in introspection_url (a '%u' crashes its "
                "auth process); pass the plain URL and list delegated logins as shared_mailboxes"
            )
        self.workdir = Path(workdir).resolve()
        if any(ch.isspace() or ch in "\"'" for ch in str(self.workdir)):
            raise ValueError(f"workdir must not contain spaces or quotes: {self.workdir}")
        self.ca = ca
        self.introspection_url = introspection_url
        self.shared_mailboxes = tuple(a.lower() for a in shared_mailboxes)
        self.debug = debug
        self.instance_name = f"connector-test-{uuid.uuid4().hex[:8]}"
        self.imap_port, self.imap_plain_port, self.lmtp_port = free_ports(3)
        self.conf_path = self.workdir / "dovecot.conf"
        self.log_path = self.workdir / "dovecot.log"
        self.mail_root = self.workdir / "mail"
        self.base_dir = self.workdir / "run"
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Write the config and run `dovecot -F` in its own process group; return once all ports listen."""
        if self._proc is not None and self._proc.poll() is None:
            return
        if not dovecot_available():
            raise RuntimeError("dovecot is not installed (apt-get install dovecot-imapd dovecot-lmtpd)")
        self._prepare_dirs()
        self._write_config()
        out = open(self.workdir / "dovecot.stdout", "ab")
        try:
            self._proc = subprocess.Popen(
                [*_die_with_parent(), DOVECOT, "-F", "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() can reap every child
            )
        finally:
            out.close()
        _running.add(self)
        try:
            for port in (self.imap_port, self.imap_plain_port, self.lmtp_port):
                self._wait_listening(port)
        except Exception:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM the master (it stops its children); SIGKILL the whole group if that hangs."""
        proc, self._proc = self._proc, None
        _running.discard(self)
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of our own group only
        except (ProcessLookupError, PermissionError):
            pass
        if proc.poll() is None:
            proc.wait(timeout=5)

    def restart(self) -> None:
        """Same config, ports and mail; clients are disconnected like on a server restart."""
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> "DovecotServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 60) -> str:
        """The end of dovecot.log, for a failing test's message."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no dovecot.log yet)"

    # -- mail ------------------------------------------------------------------------------------

    def deliver(
        self, address: str, raw: bytes, folder: str = "INBOX", *, mail_from: str = "sender@test.invalid"
    ) -> None:
        """Deliver like an MTA: LMTP for INBOX; `doveadm save` for other folders (Exchange rules' job)."""
        if folder == "INBOX":
            with smtplib.LMTP("127.0.0.1", self.lmtp_port, timeout=30) as lmtp:
                refused = lmtp.sendmail(mail_from, [address], raw)
            if refused:
                raise RuntimeError(f"LMTP refused {address}: {refused}")
            return
        if folder not in self.folders(address):
            self.create_folder(address, folder)
        self._doveadm(["save", "-u", address, "-m", folder], stdin=raw)

    def doveadm(self, *args: str) -> str:
        """Run `doveadm -c <our conf> <args>` and return stdout; raise DoveadmError on failure."""
        return self._doveadm(list(args))

    def messages(self, address: str, folder: str = "INBOX") -> list[dict]:
        """What the mailbox holds now: [{uid, flags, message_id, size}] by uid; \\Recent is left out."""
        out = self._doveadm(
            ["-f", "json", "fetch", "-u", address, "uid flags size.physical hdr.message-id",
             "mailbox", folder, "all"]
        )
        rows = json.loads(out) if out.strip() else []
        result = [
            {
                "uid": int(row["uid"]),
                "flags": [f for f in row.get("flags", "").split() if f != "\\Recent"],
                "message_id": row.get("hdr.message-id", "").strip(),
                "size": int(row.get("size.physical") or 0),
            }
            for row in rows
        ]
        return sorted(result, key=lambda m: m["uid"])

    def folders(self, address: str) -> list[str]:
        out = self._doveadm(["-f", "json", "mailbox", "list", "-u", address])
        return [row["mailbox"] for row in json.loads(out)] if out.strip() else []

    def create_folder(self, address: str, name: str) -> None:
        self._doveadm(["mailbox", "create", "-s", "-u", address, name])

    def status(self, address: str, folder: str = "INBOX") -> dict[str, int]:
        """messages, uidnext, uidvalidity, unseen of a folder."""
        out = self._doveadm(
            ["-f", "json", "mailbox", "status", "-u", address, "messages uidnext uidvalidity unseen", folder]
        )
        row = json.loads(out)[0]
        return {key: int(value) for key, value in row.items() if key != "mailbox"}

    def uidvalidity(self, address: str, folder: str = "INBOX") -> int:
        return self.status(address, folder)["uidvalidity"]

    def reset_uidvalidity(self, address: str, folder: str = "INBOX") -> int:
        """Give the folder a new UIDVALIDITY, keeping its messages (the client must resync); return it."""
        new = self.uidvalidity(address, folder) + 1
        self._doveadm(["mailbox", "update", "-u", address, "--uid-validity", str(new), folder])
        return new

    def kick(self, address: str) -> None:
        """Cut all of the user's IMAP connections now (like a server-side session reset)."""
        result = self._run_doveadm(["kick", address])
        if result.returncode not in (0, 68):  # 68: nobody was connected
            raise DoveadmError(f"doveadm kick {address}: {result.stderr.decode(errors='replace')}")

    # -- internals -------------------------------------------------------------------------------

    def _doveadm(self, args: list[str], stdin: bytes | None = None) -> str:
        result = self._run_doveadm(args, stdin)
        if result.returncode != 0:
            raise DoveadmError(
                f"doveadm {' '.join(args)} exited {result.returncode}: "
                f"{result.stderr.decode(errors='replace').strip()}"
            )
        return result.stdout.decode(errors="replace")

    def _run_doveadm(self, args: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [DOVEADM, "-c", str(self.conf_path), *args],
            input=stdin if stdin is not None else b"",
            capture_output=True,
            timeout=60,
        )

    def _wait_listening(self, port: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is None or self._proc.poll() is not None:
                raise RuntimeError(f"dovecot exited at startup; log:\n{self._startup_output()}")
            try:
                wait_for_port(port, timeout=0.2)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"dovecot not listening on {port}; log:\n{self._startup_output()}")

    def _startup_output(self) -> str:
        stdout = self.workdir / "dovecot.stdout"
        text = stdout.read_text(errors="replace") if stdout.exists() else ""
        return text + "\n" + self.log_tail()

    def _identity(self) -> tuple[int, int, str, str]:
        """(mail uid, mail gid, default_login_user, default_internal_user).

        Dovecot refuses mail access as uid 0, so as root mail belongs to the `dovecot` system user;
        otherwise everything runs as the current user.
        """
        if os.geteuid() == 0:
            for name in ("dovecot", "nobody"):
                try:
                    pw = pwd.getpwnam(name)
                except KeyError:
                    continue
                login_user = "dovenull" if _user_exists("dovenull") else name
                return pw.pw_uid, pw.pw_gid, login_user, name
            raise RuntimeError("running as root needs a 'dovecot' or 'nobody' user for mail access")
        user = getpass.getuser()
        return os.getuid(), os.getgid(), user, user

    def _prepare_dirs(self) -> None:
        uid, gid, _, _ = self._identity()
        for path in (self.workdir, self.base_dir, self.workdir / "state", self.mail_root):
            path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(self.mail_root, uid, gid)
            _make_traversable(self.mail_root.parent)

    def _write_config(self) -> None:
        uid, gid, login_user, internal_user = self._identity()
        internal_group = grp.getgrgid(pwd.getpwnam(internal_user).pw_gid).gr_name
        cert = self.ca.issue(self.instance_name)
        # The auth process reads the CA lazily, after dropping to default_internal_user: give it a
        # copy it can read (a CA certificate is public) instead of a path in a 0700 directory.
        idp_ca = self.workdir / "idp-ca.pem"
        shutil.copyfile(self.ca.ca_path, idp_ca)
        idp_ca.chmod(0o644)
        oauth2_conf = self.workdir / "oauth2.conf.ext"
        oauth2_conf.write_text(self._oauth2_conf(self.introspection_url, idp_ca))
        passdbs = []
        for index, login in enumerate(self.shared_mailboxes):
            conf = self.workdir / f"oauth2-shared-{index}.conf.ext"
            conf.write_text(self._oauth2_conf(_with_user(self.introspection_url, login), idp_ca))
            passdbs.append(_passdb(conf, username_filter=login))
        passdbs.append(_passdb(oauth2_conf))
        delegated_conf = self.workdir / "oauth2-delegated.conf.ext"
        delegated_conf.write_text(self._delegation_conf(self.introspection_url.rstrip("/") + "/grant", idp_ca))
        passdbs.append(_passdb(delegated_conf))
        folders = "\n".join(
            f'  mailbox "{name}" {{\n    special_use = {use}\n    auto = subscribe\n  }}'
            for name, use in EXCHANGE_FOLDERS.items()
        )
        cpus = os.cpu_count() or 2
        self.conf_path.write_text(f"""\
# Generated by tests/servers/dovecot.py; private instance, 127.0.0.1 only.
instance_name = {self.instance_name}
base_dir = {self.base_dir}
state_dir = {self.workdir / "state"}
listen = 127.0.0.1
protocols = imap lmtp
log_path = {self.log_path}
auth_verbose = yes
auth_debug = {"yes" if self.debug else "no"}
mail_debug = {"yes" if self.debug else "no"}
default_login_user = {login_user}
default_internal_user = {internal_user}
default_internal_group = {internal_group}
first_valid_uid = 1
first_valid_gid = 1
mail_uid = {uid}
mail_gid = {gid}

ssl = yes
ssl_cert = <{cert.cert_path}
ssl_key = <{cert.key_path}

auth_mechanisms = xoauth2 oauthbearer
# Revocation must bite at once, and failures must not be slowed down in tests.
auth_cache_size = 0
auth_failure_delay = 0
{"".join(passdbs)}
userdb {{
  driver = static
  args = home={self.mail_root}/%u allow_all_users=yes
}}

mail_location = maildir:~/Maildir:LAYOUT=fs
mail_fsync = never
# IDLE push comes from inotify; this poll only bounds the delay if inotify instances run out
# (fs.inotify.max_user_instances, often 128 per uid).
mailbox_idle_check_interval = 5 secs
namespace inbox {{
  inbox = yes
  separator = /
{folders}
}}

default_client_limit = {DEFAULT_CLIENT_LIMIT}
default_vsz_limit = {DEFAULT_VSZ_LIMIT}
service imap-login {{
  chroot =
  service_count = 0
  process_min_avail = {max(IMAP_LOGIN_MIN_AVAIL, cpus)}
  client_limit = {IMAP_LOGIN_CLIENT_LIMIT}
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_plain_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.imap_port}
    ssl = yes
  }}
}}
service imap {{
  # service_count = 0: a process keeps serving new sessions (the default 1 makes client_limit moot)
  service_count = 0
  process_limit = {IMAP_PROCESS_LIMIT}
  client_limit = {IMAP_CLIENT_LIMIT}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.lmtp_port}
  }}
}}
service anvil {{
  chroot =
  # Failed logins from one IP are delayed 2, 4, 8, 15 s through this socket. The auth process
  # (not root) cannot connect with mode 0, so it turns the penalty off at start. Unlinking the
  # socket after start races with imap-login's process_min_avail starting auth at once.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service auth-worker {{
  user = $default_internal_user
}}
protocol imap {{
  mail_max_userip_connections = {MAX_USERIP_CONNECTIONS}
}}
protocol lmtp {{
  postmaster_address = postmaster@test.invalid
}}
""")

    @staticmethod
    def _oauth2_conf(url: str, ca_file: Path) -> str:
        return f"""\
introspection_mode = post
introspection_url = {url}
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
tls_ca_cert_file = {ca_file}
timeout_msecs = 10000
"""

    @staticmethod
    def _delegation_conf(grant_url: str, ca_file: Path) -> str:
        # client_id/client_secret only make Dovecot accept the grant mode; the IdP does not check them.
        return f"""\
grant_url = {grant_url}
use_grant_password = yes
client_id = dovecot
client_secret = dovecot
force_introspection = no
username_attribute = username
active_attribute = active
active_value = true
tls_ca_cert_file = {ca_file}
timeout_msecs = 10000
"""


def _die_with_parent() -> list[str]:
    """`setpriv --pdeathsig TERM`: dovecot stops even if the test process is killed (atexit won't run).

    Linux sends the signal when the *thread* that forked exits, so only from the main thread."""
    if threading.current_thread() is threading.main_thread() and shutil.which("setpriv"):
        return ["setpriv", "--pdeathsig", "TERM", "--"]
    return []


def _passdb(args: Path, username_filter: str | None = None) -> str:
    extra = f"  username_filter = {username_filter}\n" if username_filter else ""
    return f"""
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
{extra}  args = {args}
}}"""


def _with_user(url: str, login: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}user={quote(login, safe='@')}"


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _make_traversable(path: Path) -> None:
    """As root, mail processes run as another uid and must reach workdir/mail: add o+x (search only,
    not read) to any ancestor lacking it, e.g. pytest's 0700 /tmp/pytest-of-root."""
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(directory, stat.S_IMODE(mode) | stat.S_IXOTH)
