"""`connector worker` processes against the real servers: SIGTERM hands every lease back at once (measured,
far below the lease), and the worker leaves the workers table; an admin's health check lists the workers."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

from sqlalchemy import func, select

from connector.models import Account, WorkerProcess
from tests.support.app import connector_env
from tests.support.mail import connect, counts, make_mail, wait_until


def held_by(rt, pid: int) -> int:
    with rt.db.session() as session:
        return session.scalar(select(func.count()).select_from(Account)
                              .where(Account.lease_owner.like(f"%:{pid}:worker")))


def registered(rt, pid: int) -> bool:
    with rt.db.session() as session:
        return session.scalar(select(func.count()).select_from(WorkerProcess).where(WorkerProcess.pid == pid)) > 0


def test_sigterm_hands_the_leases_back_at_once(mail_app, org, ca, agent, dovecot, tmp_path):
    rt = mail_app.extensions["connector"]
    boxes = [connect(mail_app, org, ca, agent) for _ in range(3)]
    env = connector_env(rt.settings, CONNECTOR_WORKER_LEASE_SECONDS="120")
    log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen([sys.executable, "-m", "connector.cli", "worker"], env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: held_by(rt, worker.pid) == 3 and registered(rt, worker.pid), timeout=60, interval=0.05)
        account_id, address = boxes[0]
        dovecot.deliver(address, make_mail(to=address, subject="Before the stop"))
        wait_until(lambda: counts(mail_app, account_id)[0] == 1, timeout=20)  # IDLE works: the worker is settled
        sent = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        wait_until(lambda: held_by(rt, worker.pid) == 0, timeout=20, interval=0.01)
        handed_back = time.monotonic() - sent
        assert handed_back < 5.0, handed_back  # the leases last 120 s: they were released, not left to expire
        assert worker.wait(30) == 0
        assert not registered(rt, worker.pid)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
        log.close()
    print(f"leases handed back {handed_back:.2f} s after SIGTERM")
