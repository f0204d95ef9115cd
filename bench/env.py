"""Shared setup for the benchmarks: a private Dovecot, the test identity provider (out of process),
a connector database, and helpers to connect mailboxes, get tokens and run `connector` subprocesses.

Everything listens on 127.0.0.1 and lives under one work directory that is removed afterwards
(unless `--keep`). The identity provider runs as `python -m tests.idp` so that its CPU is not the
harness's; Dovecot gets its own test CA, and one CA bundle with both certificates is what the
connector, Dovecot's introspection client and the SMTP server trust.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import requests

from .database import BACKENDS, BenchPostgres, Reader

ROOT = Path(__file__).resolve().parent.parent
BASE_URL = "http://localhost"
PASSWORD = "correct horse battery"
DOMAIN = "bench.test"


def machine(postgresql: str | None = None) -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    dovecot = subprocess.run(["dovecot", "--version"], capture_output=True, text=True).stdout.strip() \
        if shutil.which("dovecot") else "missing"
    import sqlite3
    return (f"{platform.node()}: {os.cpu_count()} cores ({cpu}), {mem:.0f} GB RAM, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
            f"Dovecot {dovecot}" + (f", {postgresql}" if postgresql else ""))


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def rss_mb(pid: int) -> float:
    """Resident set size of a running process, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def hwm_mb(pid: int) -> float:
    """Peak resident set size so far (VmHWM) of a running process, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


@dataclass
class Finished:
    returncode: int
    seconds: float
    maxrss_mb: float  # the process itself (wait4)
    cpu_seconds: float  # the process itself
    tree_peak_mb: float  # PSS of the process and all its descendants (parser pool), sampled every 100 ms
    tree_cpu_seconds: float  # the same, last sample before exit
    milestone_seconds: float | None = None  # when `watch()` first said yes (see run_measured)
    milestone_tree_cpu_seconds: float | None = None  # CPU of the process tree up to then


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
                for child in children:
                    found.append(int(child))
                    todo.append(int(child))
        except OSError:
            continue
    return found


def pss_mb(pid: int) -> float:
    """Proportional set size (shared pages split between the processes sharing them), MB."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tree_sample(pid: int, memory: bool = True) -> tuple[float, float]:
    """(PSS MB, CPU s) of a process and its descendants: their memory without counting shared pages twice.

    Reading PSS (smaps_rollup walks the page tables) costs about 0.6 ms a process; `memory=False`
    reads only the CPU times and gives NaN for the memory."""
    rss, cpu = (0.0 if memory else float("nan")), 0.0
    for p in [pid, *descendants(pid)]:
        try:
            if memory:
                value = pss_mb(p)
                if value == value:  # not NaN (a zombie has no VmRSS)
                    rss += value
            cpu += cpu_seconds(p)
        except (OSError, ValueError, IndexError):
            pass
    return rss, cpu


def run_measured(cmd: list[str], env: dict, log_path: Path, timeout: float = 3600,
                 watch: Callable[[], bool] | None = None) -> Finished:
    """Run a command, return its wall time and its own peak RSS (wait4 rusage: only this child).

    `watch`, asked at every sample (20 ms) until it says yes, marks a milestone inside the run (for
    the import: every mail is a ticket), reported as seconds since the start. The PSS of the process
    tree is read at every fifth sample (100 ms): read every 20 ms, it took about a tenth of a core
    from the measured command on a 2-core machine. The process's own peak comes from wait4, exactly.
    """
    with open(log_path, "ab") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + timeout
        peak = tree_cpu = 0.0
        milestone = milestone_cpu = None
        samples = 0
        while True:
            rss, cpu = tree_sample(proc.pid, memory=samples % 5 == 0)
            samples += 1
            peak, tree_cpu = (max(peak, rss) if rss == rss else peak), max(tree_cpu, cpu)
            if watch is not None and milestone is None and watch():
                milestone, milestone_cpu = time.perf_counter() - started, tree_cpu
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    return Finished(proc.returncode, seconds, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, peak,
                    tree_cpu, milestone, milestone_cpu)


class BundleCA:
    """The Dovecot/SMTP test CA, whose `ca_path` is a bundle that also trusts the IdP's CA."""

    def __init__(self, directory: Path, extra_ca: Path) -> None:
        from tests.support.tls import TestCA

        self._ca = TestCA(directory)
        self.directory = directory
        self.ca_path = directory / "bundle.pem"
        self.ca_path.write_bytes(self._ca.ca_path.read_bytes() + Path(extra_ca).read_bytes())

    def issue(self, name, hostnames=("127.0.0.1", "localhost")):
        return self._ca.issue(name, hostnames)

    def server_context(self, name):
        return self._ca.server_context(name)

    def client_context(self):
        import ssl
        return ssl.create_default_context(cafile=str(self.ca_path))


CSRF_PAGE = "/account/password"  # any page of a signed-in user carries the session's CSRF token


class BenchEnv:
    """IdP + Dovecot + a migrated connector database (SQLite, or a private PostgreSQL: database.py) with a
    registered app and two people."""

    def __init__(self, workdir: Path, *, dovecot: bool = True, access_token_lifetime: int = 3600,
                 database: str = "sqlite") -> None:
        if database not in BACKENDS:
            raise ValueError(f"database must be one of {BACKENDS}, not {database!r}")
        self.workdir = Path(workdir)
        self.database = database
        self.postgres: BenchPostgres | None = None
        self._postgres_settings: dict[str, str] | None = None  # kept after stop(), for the report
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.want_dovecot = dovecot
        self.access_token_lifetime = access_token_lifetime
        self.idp_proc: subprocess.Popen | None = None
        self.dovecot = None
        self.rt = None
        self.app = None
        self._local = threading.local()

    # -- lifecycle ----------------------------------------------------------------------------------
    def __enter__(self) -> "BenchEnv":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        idp_dir = self.workdir / "idp"
        idp_dir.mkdir(exist_ok=True)
        self.idp_log = open(self.workdir / "idp.log", "ab")
        self.idp_proc = subprocess.Popen(
            [sys.executable, "-m", "tests.idp", "--port", "0", "--state-dir", str(idp_dir),
             "--access-token-lifetime", str(self.access_token_lifetime)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=self.idp_log)
        line = self.idp_proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the test IdP did not start; see {self.workdir / 'idp.log'}")
        info = json.loads(line)
        self.idp_url = info["url"]
        self.ca = BundleCA(self.workdir / "ca", Path(info["ca"]))
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.verify = str(self.ca.ca_path)
        tenant = self.idp("add_tenant", domain=DOMAIN)
        self.tenant_id = tenant["tenant_id"]
        self.client_secret = "bench-secret-value"
        app = self.idp("add_app", tenant=self.tenant_id, secret=self.client_secret,
                       redirect_uris=[f"{BASE_URL}/auth/microsoft/callback"])
        self.client_id = app["client_id"]
        self.idp("grant_admin_consent", tenant=self.tenant_id, client_id=self.client_id)
        if self.database == "postgresql":
            self.postgres = BenchPostgres()
            self._postgres_settings = self.postgres.settings
        if self.want_dovecot:
            from tests.servers.dovecot import DovecotServer

            self.dovecot = DovecotServer(self.workdir / "dovecot", self.ca, f"{self.idp_url}/introspect")
            self.dovecot.start()
        self._make_app()

    def stop(self) -> None:
        if self.dovecot is not None:
            self.dovecot.stop()
            self.dovecot = None
        if self.rt is not None:
            self.rt.db.dispose()
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
        if self.idp_proc is not None:
            self.idp_proc.terminate()
            try:
                self.idp_proc.wait(10)
            except subprocess.TimeoutExpired:
                self.idp_proc.kill()
            self.idp_proc = None

    # -- the identity provider -------------------------------------------------------------------------
    def idp(self, action: str, **data) -> dict:
        response = self.http.post(f"{self.idp_url}/_test/{action}", json=data, timeout=30)
        response.raise_for_status()
        return response.json()

    def idp_stats(self) -> dict:
        response = self.http.get(f"{self.idp_url}/_test/stats", timeout=30)
        response.raise_for_status()
        return response.json()

    def add_user(self, local: str) -> str:
        email = f"{local}@{DOMAIN}"
        self.idp("add_user", tenant=self.tenant_id, email=email, password="pw")
        return email

    # -- the connector ---------------------------------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.workdir / "instance" / "connector.db"

    @property
    def database_url(self) -> str:
        return self.postgres.url if self.postgres is not None else f"sqlite:///{self.db_path}"

    @property
    def database_settings(self) -> dict[str, str] | None:
        """The PostgreSQL server's version and durability settings as it runs (None on SQLite)."""
        return self._postgres_settings

    def reader(self) -> Reader:
        """A read-only connection for the harness's polling (see database.Reader)."""
        return Reader(self.database_url)

    def config(self) -> dict:
        config = {
            "app": {"base_url": BASE_URL, "data_dir": str(self.workdir / "instance")},
            "database": {"url": self.database_url},
            "microsoft": {"authority_host": self.idp_url},
            "tls": {"ca_bundle": str(self.ca.ca_path)},
        }
        if self.dovecot is not None:
            config["microsoft"].update(imap_host="127.0.0.1", imap_port=self.dovecot.imap_port)
        return config

    def _make_app(self) -> None:
        from connector import registration, users
        from connector.runtime import Runtime
        from connector.web.app import build_app

        self.rt = Runtime.create(self.config())
        self.rt.db.migrate()
        self.app = build_app(runtime=self.rt, overrides={"flask": {"TESTING": True}})
        with self.rt.db.session() as session:
            registration.save(session, self.rt.settings, self.rt.vault, client_id=self.client_id,
                              tenant=self.tenant_id, client_secret=self.client_secret, secret_expires_on=None,
                              by="bench")
            self.agent_email = "agent@helpdesk.test"
            agent = users.create_user(session, self.agent_email, PASSWORD, "agent")
            users.create_user(session, "admin@helpdesk.test", PASSWORD, "admin")
            self.api_token = users.issue_api_token(session, agent)

    def env(self, **extra: str) -> dict:
        """Environment for `connector` subprocesses (same database, keys and servers)."""
        from tests.support.app import connector_env

        return connector_env(self.rt.settings, **extra)

    def _client(self):
        """A test client signed in as the agent, one per thread."""
        client = getattr(self._local, "client", None)
        if client is None:
            from tests.support.app import login

            client = self.app.test_client()
            response = login(client, self.agent_email)
            assert response.status_code == 302, response.get_data(as_text=True)
            self._local.client = client
        return client

    def connect(self, email: str) -> int:
        """The real connect flow: app -> IdP sign-in (admin consent given) -> callback. Returns the id.

        The CSRF token for the connect POST comes from a light page (the password form: one form, no
        list), so each connect costs the same at the 1st mailbox and the 3,000th; the Mailboxes page's
        own cost at size is timed separately (mailboxes.page_times)."""
        from sqlalchemy import select

        from connector.models import Account
        from tests.idp.driver import complete_authorization
        from tests.support.app import finish_connect, post_form

        client = self._client()
        started = post_form(client, "/accounts/connect/microsoft", page=CSRF_PAGE)
        assert started.status_code == 302, started.get_data(as_text=True)[:500]
        redirect = complete_authorization(started.headers["Location"], email, "pw", ca_path=self.ca.ca_path)
        response = finish_connect(client, redirect)
        assert response.status_code == 302, response.get_data(as_text=True)[:500]
        with self.rt.db.session() as session:
            return session.scalar(select(Account.id).where(Account.address == email))

    def connect_many(self, emails: list[str], threads: int = 4) -> list[int]:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(self.connect, emails))

    def access_token(self, account_id: int) -> str:
        """The mailbox's IMAP/SMTP access token, as the worker would get it (from its own cache)."""
        from connector import tokens
        from connector.models import Account

        with self.rt.db.session() as session:
            account = session.get(Account, account_id)
            return tokens.access_token(session, self.rt, account)

    def user_token(self, email: str) -> str:
        """An IMAP/SMTP token for an IdP user who is not a connected mailbox (a customer submitting mail)."""
        from connector.identity.microsoft import MicrosoftIdentity
        from connector.registration import Registration
        from tests.idp.driver import complete_authorization
        from urllib.parse import parse_qsl, urlsplit

        ident = MicrosoftIdentity(Registration(self.client_id, self.tenant_id, self.client_secret), self.idp_url,
                                  str(self.ca.ca_path), f"{BASE_URL}/auth/microsoft/callback")
        flow = ident.start_connect(f"{BASE_URL}/auth/microsoft/callback", login_hint=email)
        redirect = complete_authorization(flow["auth_uri"], email, "pw", ca_path=self.ca.ca_path)
        connected = ident.finish_connect(flow, dict(parse_qsl(urlsplit(redirect).query)))
        token, _ = ident.mail_token(connected.token_cache, connected.home_account_id)
        return token

    # -- mail ---------------------------------------------------------------------------------------------
    def maildir(self, address: str) -> Path:
        """The mailbox's Maildir (created, owned like Dovecot's mail processes expect)."""
        root = self.dovecot.mail_root / address.lower() / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        return root

    def chown_mail(self, address: str) -> None:
        if os.geteuid() != 0:
            return
        uid, gid, _, _ = self.dovecot._identity()
        top = self.dovecot.mail_root / address.lower()
        os.chown(top, uid, gid)
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                os.chown(os.path.join(dirpath, name), uid, gid)


def self_rusage_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
