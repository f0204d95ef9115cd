"""The production web entry point: `gunicorn -w 2 wsgi:app` on this test's database (SQLite or PostgreSQL),
configured only by environment, after `connector init`: both workers answer, share sign-ins, and stop on
SIGTERM."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import requests

from tests.support.app import PASSWORD, csrf_token
from tests.support.live import ROOT, connector_command
from tests.support.net import free_port


def test_the_web_app_under_gunicorn(tmp_path, idp, ca, make_database_url):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    env.update({"CONNECTOR_CONFIG": os.devnull, "CONNECTOR_APP_DATA_DIR": str(tmp_path / "instance"),
                "CONNECTOR_APP_BASE_URL": f"http://127.0.0.1:{port}",
                "CONNECTOR_DATABASE_URL": make_database_url(migrated=False),
                "CONNECTOR_MICROSOFT_AUTHORITY_HOST": idp.url, "CONNECTOR_TLS_CA_BUNDLE": str(ca.ca_path)})
    for command in (["init"], ["create-user", "gail@helpdesk.test", "--role", "admin", "--password-stdin"]):
        done = subprocess.run(connector_command() + command, input=PASSWORD + "\n", env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    log = open(tmp_path / "gunicorn.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "wsgi:app"],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        http = requests.Session()
        http.trust_env = False
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, (tmp_path / "gunicorn.log").read_text()
            try:
                health = http.get(f"{base}/api/v1/health", timeout=2)
                if health.status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, (tmp_path / "gunicorn.log").read_text()
            time.sleep(0.1)
        assert health.json()["database"] == "ok"
        page = http.get(f"{base}/login", timeout=5)
        signed_in = http.post(f"{base}/login", data={"email": "gail@helpdesk.test", "password": PASSWORD,
                                                     "csrf_token": csrf_token(page.text)},
                              allow_redirects=False, timeout=5)
        assert signed_in.status_code == 302
        for _ in range(20):  # new connections: gunicorn's workers take turns, and each knows the session
            with requests.Session() as fresh:
                fresh.trust_env = False
                fresh.cookies.update(http.cookies)
                answer = fresh.get(f"{base}/tickets", allow_redirects=False, timeout=5)
                assert answer.status_code == 200, answer.status_code
        assert "gail@helpdesk.test" in answer.text
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
        log.close()
    assert code == 0, (tmp_path / "gunicorn.log").read_text()
