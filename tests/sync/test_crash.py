"""`connector sync --once` from the outside: its exit codes and messages.

The kill -9 tests (a worker killed in each phase of its work, at seeded random moments, checked to have
hit that phase) are the fault campaign in tests/faults/.
"""
from __future__ import annotations

import subprocess
import sys

from tests.support.app import connector_env
from tests.support.mail import connect, make_mail


def worker_env(app) -> dict:
    return connector_env(app.extensions["connector"].settings)


def connector(*args):
    return [sys.executable, "-m", "connector.cli", *args]


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
