"""A fault campaign: its size, its seed, its servers, and a fresh installation (database, data folder, web
app) for each scenario. The database is a parameter: SQLite files, or databases on a PostgreSQL server.
"""
from __future__ import annotations

import os
import pwd
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tests.faults.installation import Installation, Tuning
from tests.faults.world import World


@dataclass(frozen=True)
class Size:
    name: str
    big_import_mails: int
    big_import_kills: int
    trickle_kills: int
    bodies_mails: int
    bodies_kills: int
    move_mails: int
    move_kills: int  # each of move and delete
    sending_replies: int
    sending_data_kills: int  # kills at the moment DATA completed
    sending_random_kills: int
    cluster_mailboxes: int
    cluster_backlog: int  # mails waiting in each mailbox when the three workers start
    cluster_kills: int
    restart_rounds: int  # each server restarted this many times
    settle_each_restart: bool  # wait for everything to settle after each restart (times each server's recovery)
    settle_seconds: float  # how long everything may take to settle after the last fault


SIZES = {
    "ci": Size("ci", big_import_mails=800, big_import_kills=2, trickle_kills=2, bodies_mails=800, bodies_kills=2,
               move_mails=600, move_kills=1, sending_replies=6, sending_data_kills=1, sending_random_kills=1,
               cluster_mailboxes=4, cluster_backlog=100, cluster_kills=2, restart_rounds=1, settle_each_restart=False,
               settle_seconds=90),
    "full": Size("full", big_import_mails=3000, big_import_kills=10, trickle_kills=8, bodies_mails=3000,
                 bodies_kills=6, move_mails=1500, move_kills=5, sending_replies=40, sending_data_kills=6,
                 sending_random_kills=3, cluster_mailboxes=9, cluster_backlog=400, cluster_kills=10,
                 restart_rounds=2, settle_each_restart=True, settle_seconds=180),
}


class Databases:
    """A fresh, empty database for each installation: an SQLite file in its folder, or a new database on a
    PostgreSQL server (the test support's throwaway cluster, or CONNECTOR_TEST_DATABASE_URL)."""

    def __init__(self, kind: str) -> None:
        if kind not in ("sqlite", "postgresql"):
            raise ValueError(f"unknown database kind {kind!r}")
        self.kind = kind
        self.server = None
        if kind == "postgresql":
            from tests.support import postgres  # provided by the PostgreSQL test support

            self.server = postgres.PostgresServer.provision()

    def new(self, directory: Path) -> str:
        if self.server is None:
            return f"sqlite:///{directory / 'instance' / 'connector.db'}"
        return self.server.create_database(migrated=False)  # empty: `connector init` migrates it

    @property
    def restartable(self) -> bool:
        return self.server is not None and getattr(self.server, "workdir", None) is not None

    def restart(self) -> None:
        """Stop PostgreSQL (fast shutdown: every connection is cut) and start it again on the same port."""
        server = self.server
        data = Path(server.workdir) / "data"
        pg_ctl = Path(server.bindir) / "pg_ctl"
        # -l: the new server's output goes to its log, not to our pipe (which it would hold open for ever)
        command = [str(pg_ctl), "-D", str(data), "-l", str(Path(server.workdir) / "server.log"), "-w", "-t", "60",
                   "-m", "fast", "restart"]
        owner = data.stat().st_uid
        if os.geteuid() == 0 and owner != 0:
            command = ["runuser", "-u", pwd.getpwuid(owner).pw_name, "--"] + command
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl restart failed: {done.stderr or done.stdout}")

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()


class Campaign:
    """One run of scenarios against one World, with one seed and one size."""

    def __init__(self, world: World, workdir: Path, *, seed: int, size: Size, databases: Databases,
                 log: Callable[[str], None] = print) -> None:
        self.world = world
        self.workdir = Path(workdir)
        self.seed = seed
        self.size = size
        self.databases = databases
        self.log = log
        self.installations: list[Installation] = []

    def rng(self, scenario: str) -> random.Random:
        """Each scenario's own random sequence, so one scenario's choices do not shift another's."""
        return random.Random(f"{self.seed}/{scenario}/{self.databases.kind}")

    def install(self, name: str, tuning: Tuning | None = None) -> Installation:
        directory = self.workdir / f"{name}-{self.databases.kind}"
        if directory.exists():
            shutil.rmtree(directory)
        installation = Installation(self.world, directory, self.databases.new(directory), tuning)
        self.installations.append(installation)
        return installation.setup()

    def tag(self, scenario: str) -> str:
        """A prefix for mailbox names and Message-IDs that no other scenario or run in this world uses."""
        return f"{scenario.replace('-', '')}{self.seed}{self.databases.kind[:2]}"

    def close(self) -> None:
        for installation in self.installations:
            installation.stop()
