"""A worker killed at any point loses no mail and duplicates none when it starts again."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

from sqlalchemy import select

from connector.models import Article
from tests.support.app import connector_env
from tests.support.mail import connect, counts, make_mail, wait_until


def worker_env(app) -> dict:
    return connector_env(app.extensions["connector"].settings, CONNECTOR_MAIL_FETCH_BATCH_SIZE="5",
                         CONNECTOR_WORKER_LEASE_SECONDS="3")


def connector(*args):
    return [sys.executable, "-m", "connector.cli", *args]


def test_worker_killed_mid_import_loses_and_duplicates_nothing(mail_app, org, ca, agent, dovecot, tmp_path):
    account_id, address = connect(mail_app, org, ca, agent)
    total = 3000
    for i in range(total):
        dovecot.deliver(address, make_mail(to=address, subject=f"Bulk {i}", body=f"Body {i}"))
    env = worker_env(mail_app)
    kills = 0
    for threshold in (50, 600, 1100):  # kill three times at different points of the import
        log = open(tmp_path / f"worker-{threshold}.log", "wb")
        proc = subprocess.Popen(connector("worker"), env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: counts(mail_app, account_id)[0] >= threshold or proc.poll() is not None, timeout=60,
                       interval=0.005)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            log.close()
        kills += 1
        assert counts(mail_app, account_id)[0] < total, "the import finished before the kill; use more mail"
        time.sleep(3.5)  # let the dead worker's lease expire, as a new worker on another machine would
    finished = subprocess.run(connector("sync", "--account", address, "--once"), env=env, capture_output=True,
                              text=True, timeout=120)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert counts(mail_app, account_id) == (total, total)
    assert kills == 3
    rt = mail_app.extensions["connector"]
    with rt.db.session() as session:
        texts = session.scalars(select(Article.body_text).where(Article.account_id == account_id)).all()
        assert sorted(t.strip() for t in texts) == sorted(f"Body {i}" for i in range(total))


def test_sync_once_command_exit_codes(mail_app, org, ca, agent, dovecot, idp):
    account_id, address = connect(mail_app, org, ca, agent)
    dovecot.deliver(address, make_mail(to=address))
    env = worker_env(mail_app)
    ok = subprocess.run(connector("sync", "--once"), env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert f"{address}: 1 imported" in ok.stdout
    idp.revoke(address, code=70043)
    idp.expire_access_tokens(address)
    failed = subprocess.run(connector("sync", "--account", address, "--once"), env=env, capture_output=True,
                            text=True, timeout=60)
    assert failed.returncode == 1
    assert "FAILED" in failed.stdout and "AADSTS70043" in failed.stdout
    assert "Traceback" not in failed.stdout + failed.stderr
    unknown = subprocess.run(connector("sync", "--account", "nobody@example.net", "--once"), env=env,
                             capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 1 and "not connected" in unknown.stdout
