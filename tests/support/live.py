"""The real `connector serve` in a subprocess, configured only by environment variables.

    server = LiveServer(tmp_path, idp_url=idp.url, ca_path=ca.ca_path)
    server.create_user("admin@helpdesk.test", "admin")   # the CLI, against the same database
    server.start()                                       # returns once /api/v1/health answers
    ...
    server.stop()                                        # SIGTERM, then wait

Everything the process prints goes to `server.log_path`, so tests can assert that no secret or
token ever reaches the logs. Later tests pass more environment (IMAP/SMTP hosts, ...) through
`env=` and start the embedded worker with `worker=True`.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.support.app import PASSWORD
from tests.support.net import free_port

ROOT = Path(__file__).resolve().parents[2]


def connector_command() -> list[str]:
    """The installed console script next to this interpreter, else `python -m connector.cli`."""
    script = Path(sys.executable).parent / "connector"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "connector.cli"]


class LiveServerError(RuntimeError):
    pass


class LiveServer:
    """One `connector serve` process on 127.0.0.1 with its own data folder and database (SQLite there, or
    `database_url`)."""

    def __init__(self, directory: Path, *, idp_url: str, ca_path: str | os.PathLike, worker: bool = False,
                 env: dict[str, str] | None = None, port: int | None = None,
                 host: str = "127.0.0.1", database_url: str | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port or free_port()
        self.worker = worker
        self.data_dir = self.directory / "instance"
        self.db_path = self.data_dir / "connector.db"  # when no `database_url` is given
        self._database_url = database_url
        self.log_path = self.directory / "serve.log"
        self.base_url = f"http://{host}:{self.port}"
        self.env = self._environment(idp_url, str(ca_path), env or {})
        self.process: subprocess.Popen | None = None
        self.started_in: float | None = None  # seconds from spawn to the first health answer
        self._log = None

    @property
    def callback_url(self) -> str:
        return f"{self.base_url}/auth/microsoft/callback"

    @property
    def database_url(self) -> str:
        """The given database (e.g. PostgreSQL), else SQLite in the server's data folder."""
        return self._database_url or f"sqlite:///{self.db_path}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def _environment(self, idp_url: str, ca_path: str, extra: dict[str, str]) -> dict[str, str]:
        # Start from our environment minus any CONNECTOR_* of the developer's shell, so the server
        # sees exactly the configuration below (and no config.toml: it runs in its own folder).
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
        env.update({
            "CONNECTOR_APP_BASE_URL": self.base_url,
            "CONNECTOR_APP_DATA_DIR": str(self.data_dir),
            "CONNECTOR_DATABASE_URL": self.database_url,
            "CONNECTOR_MICROSOFT_AUTHORITY_HOST": idp_url,
            "CONNECTOR_TLS_CA_BUNDLE": ca_path,
            "PYTHONUNBUFFERED": "1",
        })
        env.update(extra)
        return env

    # -- the CLI against the same configuration --------------------------------------------------
    def cli(self, *args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(connector_command() + list(args), input=input, capture_output=True, text=True,
                              env=self.env, cwd=self.directory, timeout=timeout)

    def create_user(self, email: str, role: str = "agent", password: str = PASSWORD) -> str:
        done = self.cli("create-user", email, "--role", role, "--password-stdin", input=password + "\n")
        if done.returncode != 0:
            raise LiveServerError(f"create-user failed ({done.returncode}): {done.stderr}")
        return email

    def create_token(self, email: str) -> str:
        done = self.cli("create-token", email)
        if done.returncode != 0:
            raise LiveServerError(f"create-token failed ({done.returncode}): {done.stderr}")
        return done.stdout.strip()

    # -- the server process -----------------------------------------------------------------------
    def start(self, timeout: float = 20.0) -> "LiveServer":
        args = ["serve", "--host", self.host, "--port", str(self.port)]
        if not self.worker:
            args.append("--no-worker")
        self._log = open(self.log_path, "ab")
        began = time.monotonic()
        self.process = subprocess.Popen(connector_command() + args, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=self.env, cwd=self.directory)
        http = requests.Session()
        http.trust_env = False
        try:
            while True:
                if self.process.poll() is not None:
                    raise LiveServerError(f"connector serve exited with {self.process.returncode}:\n{self.logs()}")
                try:
                    if http.get(self.url("/api/v1/health"), timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() - began > timeout:
                    self.stop()
                    raise LiveServerError(f"/api/v1/health did not answer within {timeout}s:\n{self.logs()}")
                time.sleep(0.05)
        finally:
            http.close()
        self.started_in = time.monotonic() - began
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait (SIGKILL after `timeout`); returns the exit code."""
        code = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=5)
            code = self.process.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def logs(self) -> str:
        if self._log is not None:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def http(self) -> requests.Session:
        """A plain client for this server (no proxy or CA settings from the environment)."""
        session = requests.Session()
        session.trust_env = False
        return session

    def __enter__(self) -> "LiveServer":
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
