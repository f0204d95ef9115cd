"""One connector installation, driven only from the outside, as an operator and its users would.

The database is created with `connector init`; people and API tokens with `connector create-user` and
`create-token`; the Azure app is the configuration preset; mailboxes are connected through the web
app's own pages (`connector serve --no-worker`: sign-in, "Connect Microsoft 365", the IdP's pages,
the callback); mailbox settings through the Mailboxes page; replies through the REST API. The mail
is read and replies are sent by `connector worker` processes, which a campaign kills with SIGKILL.
Nothing here calls the worker's, sync's or outbox's Python code.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests

from tests.faults.world import CLIENT_SECRET, World
from tests.idp.driver import complete_authorization
from tests.support.net import free_port

ADMIN = "admin@helpdesk.test"
PASSWORD = "correct horse battery"


class InstallationError(RuntimeError):
    pass


@dataclass
class Tuning:
    """What a campaign sets through the configuration (environment), nothing else."""
    lease_seconds: int = 3
    sending_lease_seconds: int = 5
    fetch_batch_size: int | None = None  # None: the product's default

    def env(self) -> dict[str, str]:
        env = {"CONNECTOR_WORKER_LEASE_SECONDS": str(self.lease_seconds),
               "CONNECTOR_WORKER_SENDING_LEASE_SECONDS": str(self.sending_lease_seconds)}
        if self.fetch_batch_size is not None:
            env["CONNECTOR_MAIL_FETCH_BATCH_SIZE"] = str(self.fetch_batch_size)
        return env


def connector_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "connector.cli", *args]


class ProductProcess:
    """A `connector worker` or `connector serve` process in its own process group (its parser pool too)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path, cwd: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(connector_command(*args), env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                        stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.killed_at: float | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> float:
        """SIGKILL the process and everything it started (one process group), like a machine losing power
        under it. Returns the moment of the kill (time.monotonic())."""
        moment = self.killed_at = time.monotonic()  # before the signal: a watcher must know it was us
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(30)
        self._log.close()
        return moment

    def terminate(self, timeout: float = 30.0) -> None:
        """SIGTERM (a clean stop), then SIGKILL of the group if it does not exit."""
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # stragglers of our own group only
        except (ProcessLookupError, PermissionError):
            pass
        if self.alive:
            self.process.wait(10)
        if not self._log.closed:
            self._log.close()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


class Installation:
    """A database, a data folder, the web app (`serve --no-worker`) and the worker processes of one run."""

    def __init__(self, world: World, directory: Path, database_url: str, tuning: Tuning | None = None) -> None:
        self.world = world
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.database_url = database_url
        self.tuning = tuning or Tuning()
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.web: ProductProcess | None = None
        self.workers: list[ProductProcess] = []
        self.api_token = ""
        self._http = requests.Session()
        self._http.trust_env = False
        self._started = 0

    # -- configuration: the environment every process of this installation gets ----------------------------
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
        world = self.world
        env.update({
            "CONNECTOR_CONFIG": os.devnull,
            "CONNECTOR_APP_BASE_URL": self.base_url,
            "CONNECTOR_APP_DATA_DIR": str(self.directory / "instance"),
            "CONNECTOR_DATABASE_URL": self.database_url,
            "CONNECTOR_MICROSOFT_CLIENT_ID": world.client_id,
            "CONNECTOR_MICROSOFT_TENANT": world.tenant_id,
            "CONNECTOR_MICROSOFT_CLIENT_SECRET": CLIENT_SECRET,
            "CONNECTOR_MICROSOFT_AUTHORITY_HOST": world.idp.url,
            "CONNECTOR_MICROSOFT_IMAP_HOST": "127.0.0.1",
            "CONNECTOR_MICROSOFT_IMAP_PORT": str(world.dovecot.imap_port),
            "CONNECTOR_MICROSOFT_SMTP_HOST": "127.0.0.1",
            "CONNECTOR_MICROSOFT_SMTP_PORT": str(world.smtp.port),
            "CONNECTOR_TLS_CA_BUNDLE": str(world.ca.ca_path),
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.tuning.env())
        return env

    def cli(self, *args: str, input: str | None = None, timeout: float = 120) -> str:
        done = subprocess.run(connector_command(*args), input=input, capture_output=True, text=True,
                              env=self.env(), cwd=self.directory, timeout=timeout)
        if done.returncode != 0:
            raise InstallationError(f"connector {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
        return done.stdout

    # -- setting up ------------------------------------------------------------------------------------------
    def setup(self) -> "Installation":
        """The database (created by `create-user`, as `connector init` would), an admin with an API token, and
        the web app running."""
        self.cli("create-user", ADMIN, "--role", "admin", "--password-stdin", input=PASSWORD + "\n")
        self.api_token = self.cli("create-token", ADMIN).strip()
        self.world.allow_callback(f"{self.base_url}/auth/microsoft/callback")
        self.start_web()
        return self

    def start_web(self, timeout: float = 30.0, *, embedded_worker: bool = False) -> ProductProcess:
        """`connector serve --no-worker`, or with `embedded_worker` the embedded default (web and worker in one
        process); returns once /api/v1/health answers."""
        self._started += 1
        args = ["serve", "--host", "127.0.0.1", "--port", str(self.port)] + ([] if embedded_worker else ["--no-worker"])
        self.web = ProductProcess(f"serve-{self._started}", args, self.env(),
                                  self.directory / f"serve-{self._started}.log", self.directory)
        deadline = time.monotonic() + timeout
        while True:
            if not self.web.alive:
                raise InstallationError(f"connector serve exited:\n{self.web.log_tail()}")
            try:
                if self._http.get(self.url("/api/v1/health"), timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise InstallationError(f"connector serve did not answer /api/v1/health in {timeout}s")
            time.sleep(0.05)
        return self.web

    def url(self, path: str) -> str:
        return self.base_url + path

    def _signed_in(self) -> requests.Session:
        browser = requests.Session()
        browser.trust_env = False
        page = browser.get(self.url("/login"), timeout=30)
        done = browser.post(self.url("/login"), data={"email": ADMIN, "password": PASSWORD,
                                                      "csrf_token": _csrf(page.text)},
                            allow_redirects=False, timeout=30)
        if done.status_code != 302:
            raise InstallationError(f"signing in failed: HTTP {done.status_code}")
        return browser

    def connect(self, address: str) -> int:
        """"Connect Microsoft 365" as the admin, signing in at the IdP as the mailbox's user; returns its id."""
        browser = self._signed_in()
        token = _csrf(browser.get(self.url("/accounts"), timeout=30).text)
        started = browser.post(self.url("/accounts/connect/microsoft"), data={"csrf_token": token},
                               allow_redirects=False, timeout=30)
        if started.status_code != 302:
            raise InstallationError(f"connect did not start: HTTP {started.status_code}")
        redirect = complete_authorization(started.headers["Location"], address, "pw", ca_path=self.world.ca.ca_path)
        parts = urlsplit(redirect)
        finished = browser.get(self.url(parts.path) + "?" + parts.query, allow_redirects=False, timeout=60)
        if finished.status_code != 302:
            raise InstallationError(f"the callback refused {address}: HTTP {finished.status_code}: "
                                    f"{finished.text[:500]}")
        for account in self.accounts():
            if account["address"] == address:
                return account["id"]
        raise InstallationError(f"{address} is not listed after connecting it")

    def set_post_import_action(self, account_id: int, action: str, move_to_folder: str = "",
                               folder: str = "INBOX") -> None:
        """The mailbox's settings form on the Mailboxes page."""
        browser = self._signed_in()
        token = _csrf(browser.get(self.url("/accounts"), timeout=30).text)
        prefix = f"a{account_id}-"
        done = browser.post(self.url(f"/accounts/{account_id}/settings"),
                            data={"csrf_token": token, prefix + "folder": folder,
                                  prefix + "post_import_action": action, prefix + "move_to_folder": move_to_folder},
                            allow_redirects=True, timeout=30)
        if done.status_code != 200 or f"Settings of " not in done.text:
            raise InstallationError(f"saving the settings of mailbox {account_id} failed: HTTP {done.status_code}")

    # -- the REST API ----------------------------------------------------------------------------------------
    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.api_token}"}
        return self._http.request(method, self.url("/api/v1" + path), headers=headers, timeout=60, **kwargs)

    def accounts(self) -> list[dict]:
        response = self.api("GET", "/accounts")
        response.raise_for_status()
        return response.json()

    def tickets(self, account: str) -> list[dict]:
        found, page = [], 1
        while page:
            response = self.api("GET", "/tickets", params={"account": account, "page": page})
            response.raise_for_status()
            body = response.json()
            found.extend(body["items"])
            page = body.get("next_page")
        return found

    def reply(self, ticket_id: int, text: str) -> int:
        response = self.api("POST", f"/tickets/{ticket_id}/reply", json={"body_text": text, "cc": []})
        if response.status_code != 202:
            raise InstallationError(f"reply to ticket {ticket_id}: HTTP {response.status_code} {response.text[:300]}")
        return response.json()["article_id"]

    # -- workers ---------------------------------------------------------------------------------------------
    def start_worker(self) -> ProductProcess:
        self._started += 1
        worker = ProductProcess(f"worker-{self._started}", ["worker"], self.env(),
                                self.directory / f"worker-{self._started}.log", self.directory)
        self.workers.append(worker)
        return worker

    def live_workers(self) -> list[ProductProcess]:
        return [w for w in self.workers if w.alive]

    def stop(self) -> None:
        for process in [*self.workers, self.web]:
            if process is not None:
                process.terminate(timeout=15)
        self._http.close()


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or \
        re.search(r'name="csrf_token" value="([^"]+)"', html)
    if not match:
        raise InstallationError("no CSRF token on the page")
    return match.group(1)
